"""Verify a CAR stream against the CID asked for, block by block, as it streams.

Every block must hash to its CID and be reachable from the root; the stream is
complete only when every link of the entity has arrived. A gateway may end a
CAR early with status 200, so completeness is checked, not assumed. Directory
entries are not part of a directory's entity: they are reported as children.
"""

from dataclasses import dataclass, field

from app.services.artifacts.stages import Chunks, SizeLimitExceeded
from app.services.content.formats.car import Block, CarError, CarReader, header_bytes, section_bytes
from app.services.content.formats.cid import DAG_PB, IDENTITY, RAW, Cid
from app.services.content.formats.unixfs import (
    DagPbError,
    Link,
    UnixFsType,
    decode_node,
    hamt_prefix_length,
    unixfs_type,
)


class DagError(CarError):
    pass


@dataclass
class DagWalk:
    """What a verified entity turned out to be."""

    root: Cid
    kind: str = "unknown"
    blocks: int = 0
    block_bytes: int = 0
    children: list[Link] = field(default_factory=list)


def _follow(block: Block, walk: DagWalk, expected: set[Cid], seen: set[Cid]) -> None:
    """Add the links of a verified block that belong to its entity to `expected`."""
    if block.cid.codec == RAW:
        if block.cid == walk.root:
            walk.kind = "file"
        return
    if block.cid.codec != DAG_PB:
        raise DagError(f"block {block.cid} has codec 0x{block.cid.codec:x}; only UnixFS "
                       "(dag-pb and raw) content is backed up")
    try:
        node = decode_node(block.data)
    except DagPbError as exc:
        raise DagError(f"block {block.cid} is not valid dag-pb: {exc}") from exc
    kind = unixfs_type(node)
    if block.cid == walk.root:
        walk.kind = kind.name if kind is not None else "dag-pb"
    if kind is UnixFsType.directory:
        walk.children += [link for link in node.links if link.cid not in seen]
        return
    prefix = hamt_prefix_length(node) if kind is UnixFsType.hamt_shard else None
    for link in node.links:
        if prefix is not None and len(link.name) > prefix:
            walk.children.append(Link(link.cid, link.name[prefix:], link.tsize))
            continue
        if link.cid.hash_code == IDENTITY:
            seen.add(link.cid)  # the bytes are inside the CID itself
        elif link.cid not in seen:
            expected.add(link.cid)


async def verified_car(chunks: Chunks, root: Cid, walk: DagWalk, max_bytes: int) -> Chunks:
    """The CAR of `root`'s entity, re-emitted block by block once each block checks out."""
    reader = CarReader(chunks)
    expected: set[Cid] = {root}
    seen: set[Cid] = set()
    header_sent = False
    async for block in reader.blocks():
        if not header_sent:
            if root not in reader.roots:
                raise DagError(f"the CAR's roots are not {root}")
            yield header_bytes([root])
            header_sent = True
        if block.cid in seen:
            continue  # a block linked twice may be sent twice
        if block.cid not in expected:
            raise DagError(f"the gateway sent block {block.cid}, which is not part of {root}")
        if not await block.cid.matches_off_loop(block.data):
            raise DagError(f"block {block.cid} does not match its CID (corrupted in transit "
                           "or by the gateway)")
        expected.discard(block.cid)
        seen.add(block.cid)
        walk.blocks += 1
        walk.block_bytes += len(block.data)
        if walk.block_bytes > max_bytes:
            raise SizeLimitExceeded(f"{root} is larger than the limit of {max_bytes} bytes")
        _follow(block, walk, expected, seen)
        yield section_bytes(block)
    if not header_sent:
        raise DagError(f"the gateway sent no blocks for {root}")
    if expected:
        raise DagError(f"incomplete DAG for {root}: {len(expected)} linked block(s) never "
                       "arrived (the CAR ended early)")
