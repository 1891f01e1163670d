"""The blocks of one Azure block-blob upload, staged with a bounded number in flight while
the stream fills the next; their ids are kept in stream order for the block list."""

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import cast

from azure.storage.blob.aio import BlobClient

from app.services.storage.base import StorageError

MAX_BLOCKS = 50_000
# On a failed or cancelled put, how long blocks already being sent may take to land.
IN_FLIGHT_GRACE_SECONDS = 10.0


class BlockStager:
    """Stages blocks of one blob, at most `limit` requests at a time."""

    def __init__(self, blob: BlobClient, nonce: str, limit: int) -> None:
        self.blob = blob
        self.nonce = nonce
        self.limit = max(1, limit)
        self.ids: list[str] = []  # in stream order, as the block list commits them
        self._sending: set[asyncio.Task[None]] = set()

    async def wait_for_room(self) -> None:
        """Until fewer than `limit` blocks are in flight; the first failed block raises.
        Memory so stays at (limit + 1) blocks: those in flight and the one filling."""
        self._raise_failed()
        while len(self._sending) >= self.limit:
            await asyncio.wait(self._sending, return_when=asyncio.FIRST_COMPLETED)
            self._raise_failed()

    def send(self, chunks: list[bytes], length: int) -> None:
        """Start staging the next block, `length` bytes in `chunks` (call wait_for_room
        first)."""
        if len(self.ids) >= MAX_BLOCKS:
            raise StorageError("Object exceeds 50,000 blocks")
        # Same-length ids (Azure requires it), unique to this upload.
        block_id = f"{self.nonce}-{len(self.ids):06d}"  # the SDK base64-encodes it
        self.ids.append(block_id)
        self._sending.add(asyncio.create_task(self._stage(block_id, chunks, length)))

    async def finish(self) -> None:
        """Until every block is staged; the first failed block raises."""
        while self._sending:
            await asyncio.wait(self._sending, return_when=asyncio.FIRST_COMPLETED)
            self._raise_failed()

    async def abandon(self) -> None:
        """On failure or cancel: a block already sent may still be stored by the server
        after the blocks are dropped if we only cancelled our side, so let those in flight
        land first (bounded), then cancel what is left."""
        if not self._sending:
            return
        await asyncio.wait(self._sending, timeout=IN_FLIGHT_GRACE_SECONDS)
        for task in self._sending:
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        self._sending.clear()

    def _raise_failed(self) -> None:
        for task in [t for t in self._sending if t.done()]:
            if task.cancelled() or task.exception() is not None:
                task.result()  # raises; the task stays for abandon() to collect
            self._sending.discard(task)

    async def _stage(self, block_id: str, chunks: list[bytes], length: int) -> None:
        # The SDK's types omit async iterables, which its transport takes as they are.
        body = cast(Iterable[bytes], BlockBody(chunks))
        await self.blob.stage_block(block_id, body, length=length)


class BlockBody:
    """A block's chunks as views aiohttp sends one at a time as the socket takes them.
    Joined into bytes, each block would be one more large allocation (which also raises
    glibc's mmap threshold, so freed memory stays in the heap); given bytes, aiohttp (on
    Python < 3.12.9) copies them whole with the headers and the transport keeps another
    copy of what the socket did not take; a BytesIO it copies whole (getbuffer). Each
    iteration starts over, so the SDK's retries resend the whole block (having no
    `read`, it is never seeked)."""

    PIECE = 256 * 1024

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes | memoryview]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes | memoryview]:
        small: list[bytes] = []  # tiny chunks go out together, not one write each
        small_bytes = 0
        for chunk in self.chunks:
            if len(chunk) < self.PIECE // 4:
                small.append(chunk)
                small_bytes += len(chunk)
                if small_bytes >= self.PIECE:
                    yield b"".join(small)
                    small, small_bytes = [], 0
                continue
            if small:
                yield b"".join(small)
                small, small_bytes = [], 0
            view = memoryview(chunk)
            for start in range(0, len(view), self.PIECE):
                yield view[start:start + self.PIECE]
        if small:
            yield b"".join(small)
