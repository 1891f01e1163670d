"""Generic stages over `AsyncIterator[bytes]`: bounded hand-off, counting, limits, digest."""

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from app.errors import AppError

Chunks = AsyncGenerator[bytes, None]
CHUNK = 1 << 20
END = object()


class SizeLimitExceeded(AppError):
    status_code = 413
    code = "size_limit_exceeded"


async def buffered(chunks: Chunks, depth: int = 2) -> Chunks:
    """Run the upstream in its own task with a bounded queue, so stages overlap.

    A slow consumer fills the queue and the producer waits: back-pressure.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(depth)
    producer = asyncio.create_task(pump(chunks, queue))
    try:
        while True:
            item = await queue.get()
            if item is END:
                break
            if isinstance(item, Failure):
                raise item.exc
            yield item
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)


@dataclass
class Failure:
    """What a queue carries when its upstream raised."""

    exc: BaseException


async def pump(chunks: Chunks, queue: asyncio.Queue[Any]) -> None:
    """Move chunks into a bounded queue, then END, or a Failure if the upstream raised."""
    try:
        async with aclosing(chunks) as source:
            async for chunk in source:
                await queue.put(chunk)
    except asyncio.CancelledError:
        raise  # the reader left; nobody reads the queue any more
    except BaseException as exc:
        await queue.put(Failure(exc))
        return
    await queue.put(END)


async def counted(chunks: Chunks, on_bytes: Callable[[int], None]) -> Chunks:
    async with aclosing(chunks) as source:
        async for chunk in source:
            on_bytes(len(chunk))
            yield chunk


async def limited(chunks: Chunks, max_bytes: int, what: str = "backup") -> Chunks:
    """Fail as soon as more than max_bytes pass, before they are stored."""
    total = 0
    async with aclosing(chunks) as source:
        async for chunk in source:
            total += len(chunk)
            if total > max_bytes:
                raise SizeLimitExceeded(
                    f"The {what} exceeds the size limit of {max_bytes // (1024 * 1024)} MB")
            yield chunk


async def throttled(chunks: Chunks, bytes_per_second: float | None) -> Chunks:
    """Hold the stream to a rate (a bandwidth cap for uploads); None passes it as is."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = 0
    async with aclosing(chunks) as source:
        async for chunk in source:
            if bytes_per_second:
                total += len(chunk)
                ahead = total / bytes_per_second - (loop.time() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            yield chunk


@dataclass
class Digest:
    """SHA-256 and length of the bytes that passed through `tap`."""

    sha256: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    size: int = 0

    def add(self, data: bytes) -> None:
        """Count and hash `data` (blocking: call it from a worker thread for big buffers)."""
        self.sha256.update(data)
        self.size += len(data)

    async def tap(self, chunks: Chunks) -> Chunks:
        async with aclosing(chunks) as source:
            async for chunk in source:
                # hashlib releases the GIL for large buffers; keep it off the event loop.
                await asyncio.to_thread(self.add, chunk)
                yield chunk

    @property
    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


async def rechunk(chunks: Chunks, size: int = CHUNK) -> Chunks:
    """Coalesce small pieces into chunks of about `size` bytes; whole ones pass uncopied."""
    pending = bytearray()
    async with aclosing(chunks) as source:
        async for chunk in source:
            if not pending and len(chunk) >= size:
                yield chunk
                continue
            pending += chunk
            if len(pending) >= size:
                yield bytes(pending)
                pending.clear()
    if pending:
        yield bytes(pending)


async def from_bytes(data: bytes, size: int = CHUNK) -> Chunks:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def collect(chunks: Chunks) -> bytes:
    """Whole content of a (small) stream; for manifests and tests only."""
    out = bytearray()
    async with aclosing(chunks) as source:
        async for chunk in source:
            out += chunk
    return bytes(out)


async def drain(chunks: Chunks) -> int:
    total = 0
    async with aclosing(chunks) as source:
        async for chunk in source:
            total += len(chunk)
    return total
