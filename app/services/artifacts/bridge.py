"""Run a blocking reader→writer function (age, zstd readers) in a thread, fed by and
feeding async byte streams through bounded queues."""

import asyncio
import concurrent.futures
import io
import threading
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Any, BinaryIO

from app.services.artifacts.stages import CHUNK, END, Chunks, Failure, pump


class _Stopped(Exception):
    """The async side went away; the thread unwinds."""


class _UpstreamFailed(Exception):
    pass


class _Link:
    """Thread-side calls into the event loop that can all be cancelled at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.stopping = False
        self.current: concurrent.futures.Future[Any] | None = None

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        with self.lock:
            if self.stopping:
                coro.close()
                raise _Stopped
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self.current = future
        try:
            return future.result()
        except concurrent.futures.CancelledError as exc:
            raise _Stopped from exc

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            future = self.current
        if future is not None:
            future.cancel()


class _QueueReader(io.RawIOBase):
    def __init__(self, link: _Link, inbox: asyncio.Queue[Any],
                 upstream_error: list[BaseException]) -> None:
        self.link, self.inbox, self.upstream_error = link, inbox, upstream_error
        self.buffer = memoryview(b"")
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self.buffer:
            if self.eof:
                return 0
            item = self.link.call(self.inbox.get())
            if item is END:
                self.eof = True
                return 0
            if isinstance(item, Failure):
                # Noted here too: the library may turn our exception into its own.
                self.upstream_error.append(item.exc)
                raise _UpstreamFailed from item.exc
            self.buffer = memoryview(item)
        n = min(len(target), len(self.buffer))
        target[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n


class _QueueWriter(io.RawIOBase):
    def __init__(self, link: _Link, outbox: asyncio.Queue[Any], chunk: int) -> None:
        self.link, self.outbox, self.chunk = link, outbox, chunk
        self.pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.pending += data
        if len(self.pending) >= self.chunk:
            self.send()
        return len(data)

    def send(self) -> None:
        if self.pending:
            self.link.call(self.outbox.put(bytes(self.pending)))
            self.pending.clear()


async def through_thread(chunks: Chunks, work: Callable[[BinaryIO, BinaryIO], None],
                         depth: int = 2, out_chunk: int = CHUNK) -> Chunks:
    """Stream `chunks` through `work(reader, writer)` running in a worker thread."""
    inbox: asyncio.Queue[Any] = asyncio.Queue(depth)
    upstream_error: list[BaseException] = []

    def fed(link: _Link, writer: BinaryIO) -> None:
        work(_QueueReader(link, inbox, upstream_error), writer)  # type: ignore[arg-type]

    feeder = asyncio.create_task(pump(chunks, inbox))
    try:
        async with aclosing(_written(fed, depth, out_chunk, upstream_error)) as out:
            async for chunk in out:
                yield chunk
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)


def written_in_thread(work: Callable[[BinaryIO], None], depth: int = 2,
                      out_chunk: int = CHUNK) -> Chunks:
    """What `work(writer)`, running in a worker thread, writes, as chunks."""
    return _written(lambda _, writer: work(writer), depth, out_chunk, [])


async def _written(work: Callable[[_Link, BinaryIO], None], depth: int, out_chunk: int,
                   upstream_error: list[BaseException]) -> Chunks:
    link = _Link(asyncio.get_running_loop())
    outbox: asyncio.Queue[Any] = asyncio.Queue(depth)

    def run() -> None:
        writer = _QueueWriter(link, outbox, out_chunk)
        try:
            work(link, writer)  # type: ignore[arg-type]
            writer.send()
            link.call(outbox.put(END))
        except _Stopped:
            return
        except BaseException as exc:
            try:
                link.call(outbox.put(exc))
            except _Stopped:
                return

    worker = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        while True:
            item = await outbox.get()
            if item is END:
                break
            if isinstance(item, BaseException):
                if upstream_error:
                    raise upstream_error[0]
                raise item
            yield item
        await worker
    finally:
        link.stop()
        await asyncio.gather(worker, return_exceptions=True)
