"""WAL retention: every segment a kept base backup needs stays, older ones go. With no
kept base backup nothing goes (the WAL may be all that is left to restore from). A base
backup in the trash keeps its WAL until retention empties it: undeleted, it still restores.
"""

from collections.abc import Collection
from dataclasses import dataclass, field

import structlog
from beanie import PydanticObjectId
from pydantic import Field

from app.errors import AppError
from app.models.backup import Backup, BackupStatus
from app.models.common import ApiSchema
from app.models.wal import WalSegment
from app.services.pitr.walnames import parse_lsn, segment_name, segment_number
from app.services.pitr.window import BASE_FORMAT, base_backups, segment_size_of
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)


class WalPruned(ApiSchema):
    source: str
    segments: int = Field(description="WAL files deleted (or, in a dry run, that would be)")
    stored_bytes: int
    first: str | None = Field(description="oldest WAL file deleted")
    last: str | None = Field(description="newest WAL file deleted")
    kept_from: str = Field(description="the first WAL file the oldest kept base backup needs")


@dataclass
class WalPruning:
    pruned: list[WalPruned] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def segments(self) -> int:
        return sum(p.segments for p in self.pruned)


async def _sources(source: str | None) -> list[str]:
    if source is not None:
        return [source]
    names = await WalSegment.get_pymongo_collection().distinct("source")
    return sorted(str(n) for n in names)


async def _kept_bases(name: str, going: Collection[PydanticObjectId]) -> list[Backup]:
    """The base backups of a source that stay: completed or in the trash, not `going`."""
    trashed = await Backup.find({"source": name, "status": BackupStatus.deleted.value}
                                ).to_list()
    bases = [*await base_backups(name),
             *(b for b in trashed if b.format_chain[:1] == [BASE_FORMAT] and "pitr" in b.options)]
    return [b for b in bases if b.id not in going]


async def _prune_source(targets: StorageTargets, name: str, going: Collection[PydanticObjectId],
                        dry_run: bool, errors: list[str]) -> WalPruned | None:
    bases = await _kept_bases(name, going)
    if not bases:
        return None
    segments = await WalSegment.find({"source": name}).to_list()
    size = segment_size_of(segments)
    oldest = min(bases, key=lambda b: parse_lsn(b.options["pitr"]["startLsn"]))
    first = parse_lsn(oldest.options["pitr"]["startLsn"]) // size
    doomed = sorted((s for s in segments
                     if not s.history and segment_number(s.segment, size) < first),
                    key=lambda s: (s.segment, s.partial))
    gone = []
    for segment in doomed:
        if not dry_run:
            try:
                await targets.named(segment.storage_target).delete(segment.key)
                await segment.delete()
            except AppError as exc:
                errors.append(f"WAL {segment.segment} of {name}: {exc.message}")
                continue
        gone.append(segment)
    log.info("wal retention", source=name, segments=len(gone), dry_run=dry_run)
    kept_from = segment_name(int(oldest.options["pitr"]["timeline"]), first, size)
    return WalPruned(source=name, segments=len(gone),
                     stored_bytes=sum(s.stored_bytes for s in gone),
                     first=gone[0].segment if gone else None,
                     last=gone[-1].segment if gone else None, kept_from=kept_from)


async def plan_wal_pruning(targets: StorageTargets, source: str | None = None, *,
                           dry_run: bool = False,
                           going: Collection[PydanticObjectId] = ()) -> WalPruning:
    """Delete WAL older than the oldest kept base backup's start, per source (called by
    the cleanup job after backup retention). `going`: base backups this run removes (or
    would, in a dry run), so a dry run answers as the real run will. Errors are
    collected; the run goes on."""
    result = WalPruning()
    for name in await _sources(source):
        pruned = await _prune_source(targets, name, going, dry_run, result.errors)
        if pruned is not None:
            result.pruned.append(pruned)
    return result


async def prune_wal(targets: StorageTargets, source: str | None = None, *,
                    dry_run: bool = False) -> list[str]:
    """`plan_wal_pruning` answering only its errors."""
    return (await plan_wal_pruning(targets, source, dry_run=dry_run)).errors
