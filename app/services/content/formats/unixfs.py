"""dag-pb nodes and their UnixFS data: enough to know a block's children."""

from dataclasses import dataclass
from enum import IntEnum

from app.services.content.formats.cid import Cid, CidError, read_cid, read_varint


class UnixFsType(IntEnum):
    raw = 0
    directory = 1
    file = 2
    metadata = 3
    symlink = 4
    hamt_shard = 5


@dataclass(frozen=True)
class Link:
    cid: Cid
    name: str
    tsize: int | None


@dataclass(frozen=True)
class PbNode:
    links: list[Link]
    data: bytes | None


class DagPbError(ValueError):
    pass


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Protobuf fields (number, value) of wire types varint and length-delimited."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    try:
        while pos < len(buf):
            key, pos = read_varint(buf, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = read_varint(buf, pos)
                out.append((number, value))
            elif wire == 2:
                length, pos = read_varint(buf, pos)
                if pos + length > len(buf):
                    raise DagPbError("truncated field")
                out.append((number, buf[pos:pos + length]))
                pos += length
            else:
                raise DagPbError(f"unexpected wire type {wire}")
    except CidError as exc:
        raise DagPbError(str(exc)) from exc
    return out


def decode_node(block: bytes) -> PbNode:
    links, data = [], None
    for number, value in _fields(block):
        if number == 2 and isinstance(value, bytes):
            cid, name, tsize = None, "", None
            for n, v in _fields(value):
                if n == 1 and isinstance(v, bytes):
                    try:
                        cid = read_cid(v)[0]
                    except CidError as exc:
                        raise DagPbError(f"bad link CID: {exc}") from exc
                elif n == 2 and isinstance(v, bytes):
                    name = v.decode("utf-8", "replace")
                elif n == 3 and isinstance(v, int):
                    tsize = v
            if cid is None:
                raise DagPbError("link without a CID")
            links.append(Link(cid, name, tsize))
        elif number == 1 and isinstance(value, bytes):
            data = value
    return PbNode(links, data)


def unixfs_type(node: PbNode) -> UnixFsType | None:
    if node.data is None:
        return None
    for number, value in _fields(node.data):
        if number == 1 and isinstance(value, int):
            try:
                return UnixFsType(value)
            except ValueError:
                return None
    return None


def hamt_prefix_length(node: PbNode) -> int:
    """Length of the hex bucket prefix in a HAMT shard's link names (fanout 256: 2)."""
    fanout = 256
    for number, value in _fields(node.data or b""):
        if number == 6 and isinstance(value, int):
            fanout = value
    return len(f"{fanout - 1:X}")


def file_bytes(node: PbNode) -> bytes:
    """The inline bytes of a UnixFS file/raw node."""
    for number, value in _fields(node.data or b""):
        if number == 2 and isinstance(value, bytes):
            return value
    return b""
