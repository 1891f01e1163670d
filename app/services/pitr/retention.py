"""WAL retention: every segment a kept base backup needs stays, older ones go. With no
kept base backup nothing goes (the WAL may be all that is left to restore from)."""

import structlog

from app.errors import AppError
from app.models.wal import WalSegment
from app.services.pitr.walnames import parse_lsn, segment_number
from app.services.pitr.window import base_backups, segment_size_of
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)


async def _sources(source: str | None) -> list[str]:
    if source is not None:
        return [source]
    names = await WalSegment.get_pymongo_collection().distinct("source")
    return sorted(str(n) for n in names)


async def prune_wal(targets: StorageTargets, source: str | None = None, *,
                    dry_run: bool = False) -> list[str]:
    """Delete WAL older than the oldest kept base backup's start, per source (called by
    the cleanup job after backup retention); returns the errors, the run goes on."""
    errors: list[str] = []
    for name in await _sources(source):
        bases = await base_backups(name)
        if not bases:
            continue
        segments = await WalSegment.find({"source": name}).to_list()
        size = segment_size_of(segments)
        first = min(parse_lsn(b.options["pitr"]["startLsn"]) // size for b in bases)
        going = [s for s in segments
                 if not s.history and segment_number(s.segment, size) < first]
        for segment in [] if dry_run else going:
            try:
                await targets.named(segment.storage_target).delete(segment.key)
                await segment.delete()
            except AppError as exc:
                errors.append(f"WAL {segment.segment} of {name}: {exc.message}")
        log.info("wal retention", source=name, segments=len(going), dry_run=dry_run)
    return errors
