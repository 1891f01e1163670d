"""CAR v1 (content-addressed archives): a streaming reader and writer.

Header: varint length + dag-cbor `{"roots": [CID...], "version": 1}`; then
sections of varint length + binary CID + block bytes.
"""

from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass

from app.services.artifacts.stages import Chunks
from app.services.content.formats.cid import Cid, CidError, read_cid, read_varint, varint

# Blocks above 2 MiB are not exchanged by IPFS implementations; allow some slack.
MAX_SECTION = 4 * 1024 * 1024
MAX_HEADER = 64 * 1024


class CarError(ValueError):
    pass


@dataclass(frozen=True)
class Block:
    cid: Cid
    data: bytes


def _cbor_item(buf: bytes, pos: int) -> tuple[object, int]:
    """The few dag-cbor items a CAR header holds: maps, arrays, text, bytes, ints, tag 42."""
    if pos >= len(buf):
        raise CarError("truncated CAR header")
    major, info = buf[pos] >> 5, buf[pos] & 0x1F
    pos += 1
    if info < 24:
        value = info
    elif info in (24, 25, 26, 27):
        size = 1 << (info - 24)
        value = int.from_bytes(buf[pos:pos + size], "big")
        pos += size
    else:
        raise CarError("unsupported CBOR item in CAR header")
    if major == 0:
        return value, pos
    if major in (2, 3):
        data = buf[pos:pos + value]
        return (data if major == 2 else data.decode()), pos + value
    if major == 4:
        items = []
        for _ in range(value):
            item, pos = _cbor_item(buf, pos)
            items.append(item)
        return items, pos
    if major == 5:
        mapping = {}
        for _ in range(value):
            key, pos = _cbor_item(buf, pos)
            mapping[key], pos = _cbor_item(buf, pos)
        return mapping, pos
    if major == 6 and value == 42:
        inner, pos = _cbor_item(buf, pos)
        if not isinstance(inner, bytes) or not inner.startswith(b"\0"):
            raise CarError("bad CID in CAR header")
        return read_cid(inner[1:])[0], pos
    raise CarError("unsupported CBOR item in CAR header")


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise CarError("value too large")


def header_bytes(roots: Iterable[Cid]) -> bytes:
    roots = list(roots)
    body = _cbor_head(5, 2) + _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for root in roots:
        raw = b"\0" + root.raw
        body += b"\xd8\x2a" + _cbor_head(2, len(raw)) + raw
    body += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return varint(len(body)) + body


def section_bytes(block: Block) -> bytes:
    raw = block.cid.raw
    return varint(len(raw) + len(block.data)) + raw + block.data


class CarReader:
    """Reads a CAR from a byte stream: `roots` once the header is in, then blocks."""

    def __init__(self, chunks: Chunks) -> None:
        self.chunks = chunks
        self.buffer = bytearray()
        self.roots: list[Cid] = []
        self.done = False

    async def _fill(self, size: int) -> bool:
        async for chunk in self._source:
            self.buffer += chunk
            if len(self.buffer) >= size:
                return True
        return len(self.buffer) >= size

    async def _varint(self) -> int | None:
        while True:
            try:
                value, end = read_varint(self.buffer, 0)
            except CidError:
                if len(self.buffer) > 10:
                    raise CarError("bad section length") from None
                if not await self._fill(len(self.buffer) + 1):
                    if self.buffer:
                        raise CarError("CAR ends inside a section length") from None
                    return None
                continue
            del self.buffer[:end]
            return value

    async def blocks(self) -> AsyncIterator[Block]:
        async with aclosing(self.chunks) as source:
            self._source = source
            length = await self._varint()
            if length is None or length > MAX_HEADER:
                raise CarError("missing or oversized CAR header")
            if not await self._fill(length):
                raise CarError("CAR ends inside its header")
            header, _ = _cbor_item(bytes(self.buffer[:length]), 0)
            del self.buffer[:length]
            if not isinstance(header, dict) or header.get("version") != 1:
                raise CarError("not a CAR v1 header")
            roots = header.get("roots")
            if not isinstance(roots, list) or not all(isinstance(r, Cid) for r in roots):
                raise CarError("CAR header has no roots")
            self.roots = roots
            while True:
                length = await self._varint()
                if length is None:
                    self.done = True
                    return
                if length == 0 or length > MAX_SECTION:
                    raise CarError(f"CAR section of {length} bytes refused")
                if not await self._fill(length):
                    raise CarError("CAR ends inside a block")
                section = bytes(self.buffer[:length])
                del self.buffer[:length]
                try:
                    cid, start = read_cid(section)
                except CidError as exc:
                    raise CarError(f"bad CID in CAR section: {exc}") from exc
                yield Block(cid, section[start:])
