"""The mongodump `--archive` format (mongo-tools common/archive/spec.md): writer and reader.

archive = magic, header, *collection-metadata, terminator,
          *(namespace-header, +document, terminator | eof-header, terminator)
The EOF header of each namespace carries the CRC-64 (ECMA table, as Go's hash/crc64)
of all its document bytes.
"""

import struct
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import bson
import fastcrc
from bson import json_util
from bson.int64 import Int64

from app.services.artifacts.stages import Chunks

MAGIC = struct.pack("<I", 0x8199E26D)
TERMINATOR = b"\xff\xff\xff\xff"
FORMAT_VERSION = "0.1"
MAX_DOCUMENT = 48 * 1024 * 1024  # 16 MiB BSON limit, with room for oversized internal docs
BATCH_BYTES = 4 * 1024 * 1024


class ArchiveError(ValueError):
    pass


def crc64(data: bytes | memoryview, previous: int = 0) -> int:
    return int(fastcrc.crc64.xz(data, previous) if previous else fastcrc.crc64.xz(data))


def _to_int64(value: int) -> Int64:
    return Int64(value - (1 << 64) if value >= (1 << 63) else value)


def _from_int64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


@dataclass
class CollectionMeta:
    db: str
    collection: str
    metadata: dict[str, Any]
    size: int = 0
    type: str = ""

    def document(self) -> bytes:
        return bson.encode({
            "db": self.db, "collection": self.collection,
            "metadata": json_util.dumps(self.metadata,
                                        json_options=json_util.CANONICAL_JSON_OPTIONS),
            "size": Int64(self.size), "type": self.type,
        })


def prelude(server_version: str, tool_version: str, collections: list[CollectionMeta]) -> bytes:
    header = bson.encode({"concurrent_collections": 1, "version": FORMAT_VERSION,
                          "server_version": server_version, "tool_version": tool_version})
    return MAGIC + header + b"".join(c.document() for c in collections) + TERMINATOR


def segment(db: str, collection: str, documents: bytes) -> bytes:
    head = bson.encode({"db": db, "collection": collection, "EOF": False, "CRC": Int64(0)})
    return head + documents + TERMINATOR


def namespace_eof(db: str, collection: str, crc: int) -> bytes:
    head = bson.encode({"db": db, "collection": collection, "EOF": True,
                        "CRC": _to_int64(crc)})
    return head + TERMINATOR


@dataclass
class NamespaceSummary:
    db: str
    collection: str
    count: int = 0
    bytes: int = 0
    crc: int = 0
    expected_crc: int | None = None
    ended: bool = False

    @property
    def crc_ok(self) -> bool:
        return self.expected_crc is not None and self.expected_crc == self.crc


@dataclass
class ArchiveHeader:
    server_version: str
    tool_version: str
    collections: list[CollectionMeta]


@dataclass
class Documents:
    """A batch of whole BSON documents of one namespace, raw."""

    db: str
    collection: str
    documents: list[bytes] = field(default_factory=list)


@dataclass
class NamespaceEnd:
    summary: NamespaceSummary


ArchiveEvent = ArchiveHeader | Documents | NamespaceEnd


class _Input:
    """Exact-length reads over an async byte stream."""

    def __init__(self, chunks: Chunks) -> None:
        self.chunks = chunks
        self.buffer = bytearray()
        self.offset = 0
        self.exhausted = False

    async def _fill(self, n: int) -> bool:
        while len(self.buffer) - self.offset < n:
            if self.exhausted:
                return False
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self.exhausted = True
                return False
            if self.offset:
                del self.buffer[:self.offset]
                self.offset = 0
            self.buffer += chunk
        return True

    async def read(self, n: int, what: str) -> bytes:
        if not await self._fill(n):
            raise ArchiveError(f"archive is truncated (in {what})")
        data = bytes(self.buffer[self.offset:self.offset + n])
        self.offset += n
        return data

    async def at_end(self) -> bool:
        return not await self._fill(1)

    async def peek4(self, what: str) -> bytes:
        if not await self._fill(4):
            raise ArchiveError(f"archive is truncated (in {what})")
        return bytes(self.buffer[self.offset:self.offset + 4])

    async def document(self, what: str) -> bytes:
        head = await self.peek4(what)
        (length,) = struct.unpack("<i", head)
        if length < 5 or length > MAX_DOCUMENT:
            raise ArchiveError(f"invalid BSON length {length} (in {what})")
        return await self.read(length, what)


def _decode(raw: bytes, what: str) -> dict[str, Any]:
    try:
        return bson.decode(raw)
    except (bson.errors.InvalidBSON, ValueError) as exc:
        raise ArchiveError(f"invalid BSON in {what}: {exc}") from exc


async def read_archive(chunks: Chunks) -> AsyncGenerator[ArchiveEvent, None]:
    """Parse an archive stream, checking structure, namespaces and every CRC.

    Raises ArchiveError on anything malformed, truncated or corrupted.
    """
    async with aclosing(chunks) as source:
        data = _Input(source)
        if await data.read(4, "magic number") != MAGIC:
            raise ArchiveError("not a mongodump archive (bad magic number)")
        header = _decode(await data.document("header"), "header")
        collections = []
        while await data.peek4("collection metadata") != TERMINATOR:
            meta = _decode(await data.document("collection metadata"), "collection metadata")
            collections.append(CollectionMeta(
                db=meta["db"], collection=meta["collection"],
                metadata=json_util.loads(meta.get("metadata") or "{}"),
                size=int(meta.get("size", 0)), type=meta.get("type", "")))
        await data.read(4, "prelude terminator")
        yield ArchiveHeader(str(header.get("server_version", "")),
                            str(header.get("tool_version", "")), collections)

        namespaces: dict[tuple[str, str], NamespaceSummary] = {}
        while not await data.at_end():
            head = _decode(await data.document("namespace header"), "namespace header")
            key = (head["db"], head["collection"])
            summary = namespaces.setdefault(key, NamespaceSummary(*key))
            if summary.ended:
                raise ArchiveError(f"namespace {key[0]}.{key[1]} continues after its end")
            if head.get("EOF"):
                await _expect_terminator(data)
                summary.expected_crc = _from_int64(int(head.get("CRC", 0)))
                summary.ended = True
                if summary.expected_crc != summary.crc:
                    raise ArchiveError(f"CRC mismatch for {key[0]}.{key[1]}")
                yield NamespaceEnd(summary)
                continue
            batch = Documents(*key)
            batch_bytes = 0
            while await data.peek4("namespace data") != TERMINATOR:
                raw = await data.document(f"a document of {key[0]}.{key[1]}")
                summary.crc = crc64(raw, summary.crc)
                summary.count += 1
                summary.bytes += len(raw)
                batch.documents.append(raw)
                batch_bytes += len(raw)
                if batch_bytes >= BATCH_BYTES:
                    yield batch
                    batch, batch_bytes = Documents(*key), 0
            await data.read(4, "segment terminator")
            if batch.documents:
                yield batch
        unfinished = [f"{db}.{c}" for (db, c), s in namespaces.items() if not s.ended]
        declared = {(c.db, c.collection) for c in collections if c.type != "view"}
        missing = [f"{db}.{c}" for db, c in declared - set(namespaces)]
        if unfinished or missing:
            raise ArchiveError("archive is truncated: no end for "
                               + ", ".join(sorted(unfinished + missing)))


async def _expect_terminator(data: _Input) -> None:
    if await data.read(4, "terminator") != TERMINATOR:
        raise ArchiveError("missing terminator after namespace header")


def count_documents(batch: bytes | memoryview) -> int:
    """Number of BSON documents in a concatenation of documents."""
    view = memoryview(batch)
    count = offset = 0
    while offset < len(view):
        (length,) = struct.unpack_from("<i", view, offset)
        if length < 5:
            raise ArchiveError("invalid BSON length in a batch")
        offset += length
        count += 1
    if offset != len(view):
        raise ArchiveError("a batch ends inside a document")
    return count
