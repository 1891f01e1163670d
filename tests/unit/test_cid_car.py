"""CIDs, CAR framing and dag-pb decoding: formats other IPFS tools must agree with."""

import hashlib
from collections.abc import AsyncGenerator

import pytest

from app.errors import InvalidInputError
from app.services.content.formats.car import Block, CarError, CarReader, header_bytes, section_bytes
from app.services.content.formats.cid import DAG_PB, RAW, SHA2_256, Cid, parse_cid, varint
from app.services.content.formats.dag import DagError, DagWalk, verified_car
from app.services.content.formats.unixfs import UnixFsType, decode_node, unixfs_type

# "hello\n" as a CIDv1 raw leaf (`ipfs add --cid-version 1 --raw-leaves`).
HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


def raw_cid(data: bytes) -> Cid:
    return Cid(1, RAW, SHA2_256, hashlib.sha256(data).digest())


def test_cid_strings_round_trip() -> None:
    cid = parse_cid(HELLO_V1)
    assert (cid.version, cid.codec, cid.hash_code) == (1, RAW, SHA2_256)
    assert cid.digest == hashlib.sha256(b"hello\n").digest()
    assert str(cid) == HELLO_V1
    assert cid.matches(b"hello\n")
    assert not cid.matches(b"hello!")
    v0 = "QmUKpBKnu8nKiSJM45JTicuDhqwR7XuXZ6dn1HdHZdrgVa"
    assert str(parse_cid(v0)) == v0
    assert parse_cid(v0).codec == DAG_PB
    assert parse_cid("f" + parse_cid(HELLO_V1).raw.hex()) == cid


@pytest.mark.parametrize("text", ["QmNotACid", "bafy!!", "", "xyz", "b" + "a" * 10])
def test_bad_cids_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="not a valid CID"):
        parse_cid(text)


async def chunks_of(data: bytes, size: int = 7) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def test_car_round_trip_in_small_pieces() -> None:
    blocks = [Block(raw_cid(d), d) for d in (b"one", b"two" * 100, b"")]
    car = header_bytes([blocks[0].cid]) + b"".join(section_bytes(b) for b in blocks[:2])
    reader = CarReader(chunks_of(car))
    got = [b async for b in reader.blocks()]
    assert reader.roots == [blocks[0].cid]
    assert got == blocks[:2]
    truncated = CarReader(chunks_of(car[:-5]))
    with pytest.raises(CarError, match="ends inside a block"):
        _ = [b async for b in truncated.blocks()]
    oversized = header_bytes([]) + varint(5 * 1024 * 1024)
    with pytest.raises(CarError, match="refused"):
        _ = [b async for b in CarReader(chunks_of(oversized)).blocks()]


def pb_link(cid: Cid, name: str) -> bytes:
    body = b"\x0a" + varint(len(cid.raw)) + cid.raw + b"\x12" + varint(len(name)) + name.encode()
    return b"\x12" + varint(len(body)) + body


def pb_file(links: list[Cid]) -> bytes:
    unixfs = b"\x08\x02"  # Type = File
    return b"".join(pb_link(c, "") for c in links) + b"\x0a" + varint(len(unixfs)) + unixfs


async def test_dag_walk_needs_every_linked_block() -> None:
    leaves = [b"a" * 10, b"b" * 10]
    leaf_cids = [raw_cid(x) for x in leaves]
    root_data = pb_file(leaf_cids)
    root = Cid(1, DAG_PB, SHA2_256, hashlib.sha256(root_data).digest())
    assert unixfs_type(decode_node(root_data)) is UnixFsType.file
    whole = [Block(root, root_data), *(Block(c, d) for c, d in zip(leaf_cids, leaves,
                                                                   strict=True))]

    async def run(blocks: list[Block]) -> DagWalk:
        walk = DagWalk(root)
        car = header_bytes([root]) + b"".join(section_bytes(b) for b in blocks)
        out = b"".join([c async for c in verified_car(chunks_of(car, 64), root, walk, 10**6)])
        assert out == car
        return walk

    walk = await run(whole)
    assert (walk.kind, walk.blocks) == ("file", 3)
    with pytest.raises(DagError, match="1 linked block"):
        await run(whole[:2])
    with pytest.raises(DagError, match="does not match its CID"):
        await run([whole[0], Block(leaf_cids[0], b"x" * 10), whole[2]])
    stranger = raw_cid(b"stranger")
    with pytest.raises(DagError, match="not part of"):
        await run([whole[0], Block(stranger, b"stranger")])
