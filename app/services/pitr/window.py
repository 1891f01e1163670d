"""Continuity: each base backup's WAL from its start checked for gaps and timeline switches,
and the recoverable window of a source (earliest and latest restorable time, gaps)."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import Field

from app.config import Settings
from app.models.backup import Backup, BackupStatus
from app.models.common import ApiSchema, utcnow
from app.models.wal import WAL_FACTS_PROJECTION, WalFacts, WalSegment
from app.services.pitr import lease
from app.services.pitr.health import lease_name
from app.services.pitr.metrics import WAL_GAPS, WINDOW_EARLIEST, WINDOW_LATEST
from app.services.pitr.walnames import (
    DEFAULT_SEGMENT_SIZE,
    parse_lsn,
    segment_name,
    segment_number,
)

BASE_FORMAT = "pgbasetar"
PITR_FACTS = ("timeline", "startLsn", "stopLsn", "startWal", "stopWal", "stopTime")
# A base backup's last WAL segment ships within seconds of its end. Until this has passed,
# WAL that does not reach its stop yet is arriving: retention and the delete minimum do not
# take it for a broken chain (the window shows it as not yet restorable).
ARRIVING = timedelta(minutes=10)


class WalGap(ApiSchema):
    first_missing: str
    last_missing: str
    segments: int


class BaseBackupChain(ApiSchema):
    backup_id: str
    timeline: int
    start_wal: str
    stop_wal: str
    stop_time: datetime
    reaches: str | None = Field(description="last WAL segment contiguous from its start")
    restorable_until: datetime | None
    restorable: bool


class PitrWindow(ApiSchema):
    source: str
    earliest: datetime | None
    latest: datetime | None
    gaps: list[WalGap]
    timelines: list[int]
    segments: int
    wal_bytes: int
    base_backups: list[BaseBackupChain]
    archiver: dict[str, Any] | None = Field(
        default=None, description="the receiving replica's report (slot lag, receiver), "
                                  "null when no replica holds the archiver lease")


class WalRecord(Protocol):
    """A WalSegment (retention) or its WalFacts (the window)."""

    timeline: int
    segment: str
    start_lsn: int | None
    end_lsn: int | None
    partial: bool
    history: bool


def segment_size_of(segments: Sequence[WalRecord]) -> int:
    for seg in segments:
        if not seg.partial and not seg.history and seg.start_lsn is not None \
                and seg.end_lsn is not None:
            return seg.end_lsn - seg.start_lsn
    return DEFAULT_SEGMENT_SIZE


def _by_number(segments: Sequence[WalFacts], size: int) -> dict[int, WalFacts]:
    """One record per segment number: the highest timeline, a whole one over a partial."""
    chosen: dict[int, WalFacts] = {}
    for seg in segments:
        if seg.history:
            continue
        number = segment_number(seg.segment, size)
        old = chosen.get(number)
        if old is None or (seg.timeline, not seg.partial) > (old.timeline, not old.partial):
            chosen[number] = seg
    return chosen


def _gaps(numbers: dict[int, WalFacts], first: int, size: int) -> list[WalGap]:
    gaps, last = [], max(numbers, default=first)
    n = first
    while n <= last:
        if n in numbers:
            n += 1
            continue
        start = n
        while n <= last and n not in numbers:
            n += 1
        timeline = numbers[n].timeline if n in numbers else 1
        gaps.append(WalGap(first_missing=segment_name(timeline, start, size),
                           last_missing=segment_name(timeline, n - 1, size),
                           segments=n - start))
    return gaps


def _chain(backup: Backup, numbers: dict[int, WalFacts], size: int) -> BaseBackupChain:
    pitr: dict[str, Any] = backup.options.get("pitr", {})
    start = parse_lsn(pitr["startLsn"]) // size
    stop = parse_lsn(pitr["stopLsn"]) // size
    n = start
    while n in numbers:
        n += 1
    reach = numbers.get(n - 1) if n > start else None
    restorable = reach is not None and n - 1 >= stop
    return BaseBackupChain(
        backup_id=str(backup.id), timeline=int(pitr["timeline"]),
        start_wal=pitr["startWal"], stop_wal=pitr["stopWal"],
        stop_time=datetime.fromisoformat(pitr["stopTime"]),
        reaches=reach.segment if reach else None,
        restorable_until=reach.archived_at if restorable and reach else None,
        restorable=restorable)


def is_base_backup(backup: Backup) -> bool:
    """A completed base backup, with the facts its chain is checked from (a record rebuilt
    from a manifest without them is not checked)."""
    pitr = backup.options.get("pitr")
    return backup.status is BackupStatus.completed and \
        backup.format_chain[:1] == [BASE_FORMAT] and isinstance(pitr, dict) and \
        all(fact in pitr for fact in PITR_FACTS)


async def base_backups(source: str) -> list[Backup]:
    """Completed base backups of a source, oldest first."""
    found = await Backup.find({"source": source, "status": BackupStatus.completed.value}
                              ).to_list()
    return sorted(filter(is_base_backup, found), key=lambda b: b.created_at)


async def wal_segments(source: str) -> list[WalSegment]:
    return await WalSegment.find({"source": source}).to_list()


async def wal_facts(source: str) -> list[WalFacts]:
    found = WalSegment.get_pymongo_collection().find({"source": source}, WAL_FACTS_PROJECTION)
    return [WalFacts.model_validate(doc) async for doc in found]


def _numbered(segments: Sequence[WalFacts]) -> tuple[dict[int, WalFacts], int]:
    size = segment_size_of(segments)
    return _by_number(segments, size), size


async def unrestorable(source: str, backups: list[Backup]) -> frozenset[str]:
    """Ids of the base backups among `backups` (of `source`) whose WAL chain is broken."""
    bases = [b for b in backups if is_base_backup(b)]
    if not bases:
        return frozenset()
    numbers, size = _numbered(await wal_facts(source))
    since = utcnow() - ARRIVING
    return frozenset(str(b.id) for b in bases
                     if _broken(_chain(b, numbers, size), since))


def _broken(chain: BaseBackupChain, arriving_since: datetime) -> bool:
    stop = chain.stop_time if chain.stop_time.tzinfo else chain.stop_time.replace(tzinfo=UTC)
    return not chain.restorable and stop < arriving_since


async def source_window(settings: Settings, source: str) -> PitrWindow:
    """The recoverable window of one source, its gaps, and gauges set to match."""
    segments = await wal_facts(source)
    numbers, size = _numbered(segments)
    bases = await base_backups(source)
    chains = [_chain(b, numbers, size) for b in bases]
    good = [c for c in chains if c.restorable]
    earliest = min((c.stop_time for c in good), default=None)
    latest = max((c.restorable_until for c in good if c.restorable_until), default=None)
    first = min([parse_lsn(b.options["pitr"]["startLsn"]) // size for b in bases]
                or [min(numbers, default=0)])
    gaps = _gaps({n: s for n, s in numbers.items() if n >= first}, first, size)
    held = await lease.holder(lease_name(source))
    archiver = None
    if held is not None and held["until"].replace(tzinfo=UTC) > utcnow():
        archiver = {**held.get("status", {}), "renewedAt": held.get("renewedAt")}
    WINDOW_EARLIEST.labels(source=source).set(earliest.timestamp() if earliest else 0)
    WINDOW_LATEST.labels(source=source).set(latest.timestamp() if latest else 0)
    WAL_GAPS.labels(source=source).set(len(gaps))
    return PitrWindow(
        source=source, earliest=earliest, latest=latest, gaps=gaps,
        timelines=sorted({s.timeline for s in segments}), segments=len(numbers),
        wal_bytes=sum(s.stored_bytes for s in segments), base_backups=chains,
        archiver=archiver)


async def pitr_source_names(settings: Settings) -> list[str]:
    """Sources archived now, and those with archived WAL from before."""
    archived = await WalSegment.get_pymongo_collection().distinct("source")
    return sorted({*settings.pitr.sources, *(str(n) for n in archived)})
