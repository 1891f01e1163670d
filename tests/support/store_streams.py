"""Streams for the storage contract: deterministic bytes made as they are asked for (never
held whole), a source that dies, and a gate that holds a stream mid-way."""

import asyncio
import hashlib
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

MIB = 1024 * 1024
BLOCK = os.urandom(MIB)


def pattern(index: int) -> bytes:
    """The index-th MiB of a deterministic stream (distinct per MiB)."""
    return index.to_bytes(8, "big") + BLOCK[8:]


async def stream(total: int, gate: "Gate | None" = None) -> AsyncGenerator[bytes, None]:
    """`total` bytes in 1 MiB chunks made as they are asked for (never held whole)."""
    sent = 0
    index = 0
    while sent < total:
        if gate is not None and sent >= gate.hold_at and not gate.reached.is_set():
            gate.reached.set()
            await gate.release.wait()
            if gate.fail:
                raise RuntimeError("source died")
        chunk = pattern(index)[: total - sent]
        index += 1
        sent += len(chunk)
        yield chunk


def digest_of_pattern(total: int) -> str:
    sha = hashlib.sha256()
    sent, index = 0, 0
    while sent < total:
        chunk = pattern(index)[: total - sent]
        sha.update(chunk)
        sent += len(chunk)
        index += 1
    return sha.hexdigest()


async def failing(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data
    raise RuntimeError("source died")


@dataclass
class Gate:
    """Holds a stream at `hold_at` bytes until released (then it goes on, or fails)."""

    hold_at: int
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False
