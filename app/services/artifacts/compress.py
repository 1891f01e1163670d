"""zstd and gzip stages; both streams open with the stock `zstd -d` / `gzip -d`."""

import asyncio
import io
import zlib
from contextlib import aclosing
from typing import Any, BinaryIO, Protocol

import zstandard

from app.config import CompressionAlgorithm
from app.services.artifacts.bridge import through_thread
from app.services.artifacts.stages import CHUNK, Chunks

# Small multithreading jobs: the default (several windows) buffers tens of MB per worker
# for no gain in speed or ratio on this data; 1 MiB instead of 2 MiB saves another ~15 MB
# of peak memory at the same speed and ratio (bench/).
ZSTD_JOB_SIZE = 1 * 1024 * 1024
SUFFIX = {CompressionAlgorithm.zstd: "zst", CompressionAlgorithm.gzip: "gz",
          CompressionAlgorithm.none: None}
ALGORITHM_OF_SUFFIX = {"zst": CompressionAlgorithm.zstd, "gz": CompressionAlgorithm.gzip}


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


def new_compressor(algorithm: CompressionAlgorithm, level: int, threads: int = 0) -> Compressor:
    """zstd (threads: 0 = one worker per core, -1 = none: small objects cost more to hand to
    workers than to compress) or gzip; not for `none`."""
    if algorithm is CompressionAlgorithm.zstd:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads={0: -1, -1: 0}.get(threads, threads), job_size=ZSTD_JOB_SIZE,
            write_checksum=True)
        return zstandard.ZstdCompressor(compression_params=params).compressobj()
    return zlib.compressobj(level, zlib.DEFLATED, 31)


async def compress(chunks: Chunks, algorithm: CompressionAlgorithm, level: int,
                   threads: int = 0) -> Chunks:
    """Compress off the event loop."""
    if algorithm is CompressionAlgorithm.none:
        async with aclosing(chunks) as source:
            async for chunk in source:
                yield chunk
        return
    compressor = new_compressor(algorithm, level, threads)
    async with aclosing(chunks) as source:
        async for chunk in source:
            out = await asyncio.to_thread(compressor.compress, chunk)
            if out:
                yield out
    tail = await asyncio.to_thread(compressor.flush)
    if tail:
        yield tail


class CompressingReader(io.RawIOBase):
    """A blocking file read through a compressor (None: as is); `plain_bytes` counts what
    was read."""

    def __init__(self, source: BinaryIO, compressor: Compressor | None) -> None:
        self.source, self.compressor = source, compressor
        self.out = memoryview(b"")
        self.plain_bytes = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self.out and not self.done:
            data = self.source.read(CHUNK)
            self.plain_bytes += len(data)
            if self.compressor is None:
                out = data
            else:
                out = self.compressor.compress(data) if data else self.compressor.flush()
            self.done = not data
            self.out = memoryview(out)
        n = min(len(target), len(self.out))
        target[:n] = self.out[:n]
        self.out = self.out[n:]
        return n


ZSTD_FEED = 64 * 1024


def _zstd_decompress(reader: BinaryIO, writer: BinaryIO) -> None:
    # Small input slices keep each output burst bounded; `eof` catches a truncated frame.
    dobj = zstandard.ZstdDecompressor().decompressobj(write_size=CHUNK)
    while data := reader.read(ZSTD_FEED):
        view = memoryview(data)
        for start in range(0, len(view), ZSTD_FEED):
            if dobj.eof:
                raise zstandard.ZstdError("zstd stream has data after its end")
            writer.write(dobj.decompress(view[start:start + ZSTD_FEED]))
    if not dobj.eof:
        raise zstandard.ZstdError("zstd stream is truncated")


def _gzip_decompress(reader: BinaryIO, writer: BinaryIO) -> None:
    dobj = zlib.decompressobj(31)
    while data := reader.read(CHUNK):
        while data:
            writer.write(dobj.decompress(data, CHUNK))
            data = dobj.unconsumed_tail
    writer.write(dobj.flush())
    if not dobj.eof:
        raise zlib.error("gzip stream is truncated")


async def decompress(chunks: Chunks, algorithm: CompressionAlgorithm) -> Chunks:
    if algorithm is CompressionAlgorithm.none:
        async with aclosing(chunks) as source:
            async for chunk in source:
                yield chunk
        return
    work = _zstd_decompress if algorithm is CompressionAlgorithm.zstd else _gzip_decompress
    async with aclosing(through_thread(chunks, work)) as out:
        async for chunk in out:
            yield chunk
