"""Shipping one received WAL file through the pipeline (zstd, age, SHA-256) to storage,
with its catalog record; and reading one back, checked."""

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from app.config import Settings
from app.errors import NotFoundError
from app.models.common import utcnow
from app.models.wal import WalSegment
from app.services.artifacts.read import opened
from app.services.artifacts.stages import CHUNK, Chunks, Digest, collect
from app.services.databases.backup import sealed_file
from app.services.databases.manifest import format_chain
from app.services.jobs.runner import Progress
from app.services.pitr.walnames import is_history, segment_range, timeline_of
from app.services.storage import StorageTargets

PARTIAL = ".partial"
PARTIAL_LOOKUPS = 3


class WalIntegrityError(NotFoundError):
    """A stored WAL object does not match its recorded SHA-256 (treated as missing)."""

    code = "wal_damaged"


def wal_key(source: str, name: str, chain: list[str]) -> str:
    return f"wal/{source}/{name}.{'.'.join(chain[1:])}" if len(chain) > 1 else \
        f"wal/{source}/{name}"


async def ship_file(settings: Settings, targets: StorageTargets, source: str, path: Path,
                    segment_size: int, received: int | None = None) -> WalSegment:
    """Store one file of the receive folder and record it; a `.partial` one replaces the
    previous partial copy of its segment. `received`: bytes of a partial that hold WAL."""
    name = path.name.removesuffix(PARTIAL)
    partial = path.name.endswith(PARTIAL)
    history = is_history(name)
    chain = ["wal", *format_chain(settings, "wal")[1:]]
    stored_name = name + (PARTIAL if partial else "")
    key = wal_key(source, stored_name, chain)
    digest = Digest()
    progress = Progress()
    stream = sealed_file(settings, path, digest, progress)
    stored = await targets.default.put(key, stream)
    start, end = (None, None) if history else segment_range(name, segment_size)
    if partial and end is not None and start is not None and received is not None:
        end = start + received
    segment = WalSegment(
        id=f"{source}:{stored_name}", source=source, timeline=timeline_of(name),
        segment=name, start_lsn=start, end_lsn=end, size=progress.bytes_read,
        stored_bytes=stored, sha256=digest.hexdigest, storage_target=targets.default_name,
        key=key, format_chain=chain, archived_at=utcnow(), partial=partial, history=history)
    await WalSegment.get_pymongo_collection().replace_one(
        {"_id": segment.id}, segment.model_dump(by_alias=True, mode="python"), upsert=True)
    return segment


async def drop_partial(targets: StorageTargets, source: str, name: str) -> None:
    """The partial copy of a segment that is now archived whole goes."""
    record = await WalSegment.get(f"{source}:{name}{PARTIAL}")
    if record is not None:
        await targets.named(record.storage_target).delete(record.key)
        await record.delete()


async def find_wal(source: str, name: str) -> WalSegment | None:
    """The archived file of that name; for a segment not archived whole, its partial copy."""
    found = await WalSegment.get(f"{source}:{name}")
    if found is None and not is_history(name):
        found = await WalSegment.get(f"{source}:{name}{PARTIAL}")
    return found


async def checked_plaintext(settings: Settings, targets: StorageTargets,
                            segment: WalSegment) -> AsyncIterator[bytes]:
    """The segment's plaintext, once its stored bytes match the recorded SHA-256 (segments
    are small: read whole, checked, then opened)."""
    raw = await collect(targets.named(segment.storage_target).get(segment.key))
    if hashlib.sha256(raw).hexdigest() != segment.sha256:
        raise WalIntegrityError(f"WAL {segment.segment} of {segment.source}: stored bytes do "
                                "not match the recorded SHA-256")

    async def once() -> Chunks:
        for start in range(0, len(raw), CHUNK):
            yield raw[start:start + CHUNK]

    return opened(once(), segment.format_chain, settings)


async def fetch_to(settings: Settings, targets: StorageTargets, source: str, name: str,
                   dest: Path) -> WalSegment:
    """`restore_command`'s work: one WAL file written to dest (via a temporary name),
    looked up just before it is read: the segment being received is re-shipped (a new
    SHA-256) every partial interval and dropped once archived whole, so a partial copy that
    changed meanwhile is looked up again."""
    for _ in range(PARTIAL_LOOKUPS - 1):
        segment = await _archived(source, name)
        try:
            return await fetch_segment_to(settings, targets, segment, dest)
        except NotFoundError:
            if not segment.partial:
                raise
    return await fetch_segment_to(settings, targets, await _archived(source, name), dest)


async def _archived(source: str, name: str) -> WalSegment:
    segment = await find_wal(source, name)
    if segment is None:
        raise NotFoundError(f"WAL file {name} of {source} is not archived")
    return segment


async def fetch_segment_to(settings: Settings, targets: StorageTargets, segment: WalSegment,
                           dest: Path) -> WalSegment:
    """One archived WAL file, its checksum checked, to dest: it appears there whole."""
    tmp = dest.with_name(dest.name + ".bvtmp")
    try:
        with tmp.open("wb") as out:
            async for chunk in await checked_plaintext(settings, targets, segment):
                await asyncio.to_thread(out.write, chunk)
        tmp.chmod(0o644)  # a restore's instance runs as another user (its folder is 0700)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return segment
