"""Content identifiers (CIDv0 and v1): parse, print, read from bytes, check a block.

Written out here rather than taken from a library: the block path checks one
hash per block and only needs these few codecs and hash functions.
"""

import asyncio
import base64
import hashlib
from dataclasses import dataclass

from app.errors import InvalidInputError

DAG_PB = 0x70
RAW = 0x55
DAG_CBOR = 0x71
IDENTITY = 0x00
SHA2_256 = 0x12
SHA2_512 = 0x13
BLAKE2B_256 = 0xB220
HASHES = {
    SHA2_256: lambda data: hashlib.sha256(data).digest(),
    SHA2_512: lambda data: hashlib.sha512(data).digest(),
    BLAKE2B_256: lambda data: hashlib.blake2b(data, digest_size=32).digest(),
    IDENTITY: lambda data: bytes(data),
}
# Hashing a block this small takes less time than handing it to a thread.
INLINE_HASH_BYTES = 64 * 1024
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
B58_INDEX = {c: i for i, c in enumerate(B58)}


class CidError(ValueError):
    pass


def read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint at pos; returns (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise CidError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CidError("varint too long")


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in B58_INDEX:
            raise CidError(f"invalid base58 character {char!r}")
        number = number * 58 + B58_INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rest = divmod(number, 58)
        out = B58[rest] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


@dataclass(frozen=True)
class Cid:
    version: int
    codec: int
    hash_code: int
    digest: bytes

    @property
    def multihash(self) -> bytes:
        return varint(self.hash_code) + varint(len(self.digest)) + self.digest

    @property
    def raw(self) -> bytes:
        """The binary form (as in CAR files and dag-pb links)."""
        if self.version == 0:
            return self.multihash
        return varint(1) + varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + base64.b32encode(self.raw).decode().lower().rstrip("=")

    def matches(self, data: bytes | memoryview) -> bool:
        """Whether data is the block this CID names."""
        digest = HASHES[self.hash_code](data)
        return bool(digest[:len(self.digest)] == self.digest)

    async def matches_off_loop(self, data: bytes | memoryview) -> bool:
        """matches(), hashing in a worker thread unless the block is small."""
        if len(data) < INLINE_HASH_BYTES:
            return self.matches(data)
        return await asyncio.to_thread(self.matches, data)


def read_cid(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Cid, int]:
    """A binary CID at pos; returns (cid, next position)."""
    if len(buf) - pos >= 2 and buf[pos] == SHA2_256 and buf[pos + 1] == 32:
        end = pos + 34
        if end > len(buf):
            raise CidError("truncated CIDv0")
        return Cid(0, DAG_PB, SHA2_256, bytes(buf[pos + 2:end])), end
    version, pos = read_varint(buf, pos)
    if version != 1:
        raise CidError(f"unsupported CID version {version}")
    codec, pos = read_varint(buf, pos)
    hash_code, pos = read_varint(buf, pos)
    length, pos = read_varint(buf, pos)
    if hash_code not in HASHES:
        raise CidError(f"unsupported multihash 0x{hash_code:x}")
    if pos + length > len(buf):
        raise CidError("truncated CID digest")
    return Cid(1, codec, hash_code, bytes(buf[pos:pos + length])), pos + length


def parse_cid(text: str) -> Cid:
    """A CID from its string form (CIDv0 base58, CIDv1 base32 `b`, base58 `z`, hex `f`)."""
    text = text.strip()
    try:
        if len(text) == 46 and text.startswith("Qm"):
            raw = b58decode(text)
        elif text[:1] in ("b", "B"):
            body = text[1:].upper()
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        elif text[:1] == "z":
            raw = b58decode(text[1:])
        elif text[:1] in ("f", "F"):
            raw = bytes.fromhex(text[1:])
        else:
            raise CidError("unknown multibase")
        cid, end = read_cid(raw)
        if end != len(raw):
            raise CidError("trailing bytes")
        return cid
    except (CidError, ValueError) as exc:
        raise InvalidInputError(f"{text[:80]!r} is not a valid CID ({exc})") from exc
