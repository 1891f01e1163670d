"""Retention: which backups go and why, and their removal (objects first, then the record).

A good backup is completed or restored and has not failed verification. Per
source, the newest `min_count` good backups and those a GFS rule selects are
always kept; any other backup goes when it is past its own retentionDays or,
for good ones, beyond the newest `max_count`. A pre-restore safety backup never
counts toward its source's minimum, GFS or maximum: it goes by its own
retentionDays only. A backup in the trash goes once it has been there `trash_days`.

PITR base backups (`pgbasetar`) are a series of their own per source, decided by the
same rules with `pitr.base_min_count` / `base_max_count` and no GFS: a GFS rule would
keep a months-old base backup and with it every WAL segment since. Base backups never
count toward the dumps' minimum, GFS or maximum, nor dumps toward theirs. After the
backups, WAL older than the oldest kept base backup's start goes.
"""

import zoneinfo
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

import structlog
from beanie import PydanticObjectId
from pydantic import Field

from app.config import RetentionSettings, Settings
from app.errors import AppError
from app.models.backup import GOOD_STATUSES, Backup, BackupStatus, VerificationState
from app.models.common import ApiSchema, utcnow
from app.models.content import ContentItem, ContentObject
from app.models.job_params import CleanupParams, params_of
from app.models.requests import CleanupRequest
from app.services.content.located import object_storage
from app.services.databases.backup import remove_backup
from app.services.jobs.runner import JobContext
from app.services.pitr.retention import WalPruned, plan_wal_pruning
from app.services.pitr.window import BASE_FORMAT, unrestorable
from app.services.storage import Targets, as_targets

log = structlog.get_logger(__name__)
# The retention series of a source: its own backups, and its PITR base backups.
Series = Literal["dumps", "pitrBase"]


class RetentionItem(ApiSchema):
    id: PydanticObjectId
    source: str | None
    status: BackupStatus
    created_at: datetime
    stored_bytes: int | None
    reasons: list[str]


class SourceRetention(ApiSchema):
    source: str | None
    series: Series = Field(default="dumps", description="dumps: the source's own backups; "
                                                        "pitrBase: its PITR base backups")
    good: int = Field(description="good backups before this run")
    deleted: int
    good_left: int


class CleanupResult(ApiSchema):
    dry_run: bool
    evaluated_at: datetime
    deleted: list[RetentionItem]
    protected: list[RetentionItem] = Field(description="due to go but kept, with the rule "
                                                       "that keeps them")
    sources: list[SourceRetention]
    deleted_count: int
    freed_bytes: int
    content_objects_deleted: list[str] = Field(
        default=[], description="stored content no kept content backup references any more")
    wal_segments_deleted: int = Field(
        default=0, description="archived WAL files deleted (in a dry run: that would be), "
                               "older than the oldest kept base backup needs")
    wal: list[WalPruned] = Field(default=[], description="WAL retention per PITR source")
    errors: list[str] = []


def is_good(backup: Backup) -> bool:
    return (backup.status in GOOD_STATUSES and backup.deleting_since is None
            and backup.verification.state is not VerificationState.failed)


def counts_for_source(backup: Backup) -> bool:
    """A good backup that is one of its source's own (not a pre-restore safety copy)."""
    return is_good(backup) and backup.safety_for is None


# `counts_for_source` as a catalog query.
GOOD_FILTER: dict[str, Any] = {
    "status": {"$in": [s.value for s in GOOD_STATUSES]}, "deletingSince": None,
    "verification.state": {"$ne": VerificationState.failed.value}, "safetyFor": None}


def good_query(source: str | None) -> dict[str, Any]:
    """The good backups of one source that count toward its minimum."""
    return {"source": source, **GOOD_FILTER}


def trash_reason(backup: Backup, policy: RetentionSettings, now: datetime) -> str | None:
    """Why a backup in the trash goes now, or None while it stays undeletable."""
    since = backup.deleted_at or backup.updated_at
    if since + timedelta(days=policy.trash_days) > now:
        return None
    return (f"in the trash since {since:%Y-%m-%d %H:%M} UTC ({backup.deletion_reason}), "
            f"longer than retention.trash_days = {policy.trash_days}")


@dataclass
class Decision:
    delete: dict[PydanticObjectId, list[str]] = field(default_factory=dict)
    protect: dict[PydanticObjectId, list[str]] = field(default_factory=dict)


GFS_RULES: list[tuple[str, str, Callable[[datetime], Hashable]]] = [
    ("keep_daily", "daily", lambda t: t.date()),
    ("keep_weekly", "weekly", lambda t: t.isocalendar()[:2]),
    ("keep_monthly", "monthly", lambda t: (t.year, t.month)),
    ("keep_yearly", "yearly", lambda t: t.year),
]


def decide(backups: list[Backup], policy: RetentionSettings, now: datetime,
           timezone: str = "UTC", noun: str = "good backups",
           counted: Callable[[Backup], bool] = counts_for_source) -> Decision:
    """The fate of one series of a source's finished backups (never pending ones)."""
    zone = zoneinfo.ZoneInfo(timezone)
    decision = Decision()
    newest_first = sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)
    good = [b for b in newest_first if counted(b)]
    rank = {id(b): n for n, b in enumerate(good)}
    protect: dict[PydanticObjectId, list[str]] = {}

    def keep(backup: Backup, reason: str) -> None:
        assert backup.id is not None
        protect.setdefault(backup.id, []).append(reason)

    for backup in good[:policy.min_count]:
        keep(backup, f"one of the newest {policy.min_count} {noun} (minimum)")
    for setting, label, bucket_of in GFS_RULES:
        wanted: int = getattr(policy, setting)
        seen: set[Hashable] = set()
        for backup in good:
            if len(seen) >= wanted:
                break
            bucket = bucket_of(backup.created_at.astimezone(zone))
            if bucket not in seen:
                seen.add(bucket)
                keep(backup, f"GFS {label}: newest good backup of {bucket}")
    for backup in newest_first:
        assert backup.id is not None
        reasons = []
        if backup.deleting_since is not None:
            reasons.append(f"finishing an interrupted deletion ({backup.deletion_reason})")
        elif backup.status is BackupStatus.deleted:
            # Undeletable for the whole grace period, whatever its own age.
            if (why := trash_reason(backup, policy, now)) is not None:
                decision.delete[backup.id] = [why]
            continue
        age_limit = backup.created_at + timedelta(days=backup.retention_days)
        if age_limit <= now:
            what = "good backup" if is_good(backup) else f"{backup.status.value} backup"
            reasons.append(f"{what} past its retention of {backup.retention_days} days")
        if rank.get(id(backup), -1) >= policy.max_count:
            reasons.append(f"beyond the newest {policy.max_count} {noun} of its source")
        if not reasons:
            continue
        if backup.id in protect and backup.deleting_since is None:
            decision.protect[backup.id] = protect[backup.id]
        else:
            decision.delete[backup.id] = reasons
    return decision


def series_policy(series: Series, settings: Settings) -> RetentionSettings:
    """Dumps: `retention`. Base backups: its counts replaced by pitr's, GFS off."""
    if series == "dumps":
        return settings.retention
    return settings.retention.model_copy(update={
        "min_count": settings.pitr.base_min_count, "max_count": settings.pitr.base_max_count,
        **{setting: 0 for setting, _, _ in GFS_RULES}})


NOUNS: dict[Series, str] = {"dumps": "good backups", "pitrBase": "good base backups"}


def chain_series(format_chain: list[str]) -> Series:
    return "pitrBase" if format_chain[:1] == [BASE_FORMAT] else "dumps"


def series_of(backup: Backup) -> Series:
    return chain_series(backup.format_chain)


def counted_in_series(backup: Backup, broken: frozenset[str]) -> bool:
    """Whether a backup counts toward its series' minimum and maximum: a good one, and for
    a base backup one whose WAL chain is not broken (so an older restorable one stays)."""
    return counts_for_source(backup) and str(backup.id) not in broken


async def _good_bases(source: str | None) -> tuple[list[Backup], frozenset[str]]:
    """The good base backups of a source, and those among them whose chain is broken."""
    bases = [b for b in await Backup.find(good_query(source)).to_list()
             if series_of(b) == "pitrBase"]
    return bases, await unrestorable_bases(bases)


def _counted_besides(bases: list[Backup], broken: frozenset[str],
                     but: PydanticObjectId | None) -> int:
    return sum(b.id != but and counted_in_series(b, broken) for b in bases)


async def good_in_series(source: str | None, series: Series,
                         but: PydanticObjectId | None = None) -> int:
    """The backups of one series of a source, other than `but`, that its minimum is kept
    against (`counted_in_series`)."""
    if series == "dumps":
        found = Backup.get_pymongo_collection().find(good_query(source), {"formatChain": 1})
        return sum([chain_series(raw.get("formatChain") or []) == series and raw["_id"] != but
                    async for raw in found])
    return _counted_besides(*await _good_bases(source), but)


async def series_standing(backup: Backup) -> tuple[bool, int]:
    """Whether deleting `backup` lowers what its series' minimum is kept against, and how
    many of the series count besides it (the WAL facts read once for a base backup)."""
    if series_of(backup) == "dumps":
        return counts_for_source(backup), await good_in_series(backup.source, "dumps",
                                                                backup.id)
    bases, broken = await _good_bases(backup.source)
    return counted_in_series(backup, broken), _counted_besides(bases, broken, backup.id)


async def unrestorable_bases(backups: list[Backup]) -> frozenset[str]:
    """The base backups among `backups` (one source's) whose WAL chain is broken: they
    do not count toward the base series' minimum and maximum, so an older restorable one
    stays kept rather than two unrestorable ones."""
    source = backups[0].source if backups else None
    return frozenset() if source is None else await unrestorable(source, backups)


def decide_series(backups: list[Backup], settings: Settings, now: datetime,
                  unrestorable: frozenset[str] = frozenset()
                  ) -> list[tuple[Series, list[Backup], Decision]]:
    """One source's finished backups split into its series, each with its fate."""
    split: dict[Series, list[Backup]] = {"dumps": [], "pitrBase": []}
    for backup in backups:
        split[series_of(backup)].append(backup)

    counted = partial(counted_in_series, broken=unrestorable)
    return [(series, part, decide(part, series_policy(series, settings), now,
                                  settings.system.timezone, NOUNS[series], counted))
            for series, part in split.items() if part]


def decide_source(backups: list[Backup], settings: Settings, now: datetime,
                  unrestorable: frozenset[str] = frozenset()) -> Decision:
    """The fate of all of one source's finished backups, every series decided on its own."""
    merged = Decision()
    for _, _, decision in decide_series(backups, settings, now, unrestorable):
        merged.delete.update(decision.delete)
        merged.protect.update(decision.protect)
    return merged


def _item(backup: Backup, reasons: list[str]) -> RetentionItem:
    assert backup.id is not None
    return RetentionItem(id=backup.id, source=backup.source, status=backup.status,
                         created_at=backup.created_at, stored_bytes=backup.stored_bytes,
                         reasons=reasons)


async def _finished_backups(source: str | None) -> dict[str | None, list[Backup]]:
    query: dict[str, Any] = {"status": {"$ne": BackupStatus.pending.value}}
    if source is not None:
        query["source"] = source
    by_source: dict[str | None, list[Backup]] = {}
    async for backup in Backup.find(query):
        by_source.setdefault(backup.source, []).append(backup)
    return by_source


async def unreferenced_content(going: set[PydanticObjectId], now: datetime,
                               grace_seconds: float) -> list[ContentObject]:
    """Content objects no content backup outside `going` references.

    Objects used within the grace period are kept: a running backup may be about to
    reference one it found already stored."""
    referenced: set[str] = set()
    async for raw in ContentItem.get_pymongo_collection().find({}, {"backupId": 1,
                                                                   "objects": 1}):
        if raw.get("backupId") not in going:
            referenced.update(raw.get("objects") or [])
    cutoff = now - timedelta(seconds=grace_seconds)
    return [obj async for obj in ContentObject.find({"lastUsedAt": {"$lt": cutoff}})
            if obj.address not in referenced]


@dataclass
class _Outcome:
    deleted: list[RetentionItem] = field(default_factory=list)
    protected: list[RetentionItem] = field(default_factory=list)
    sources: list[SourceRetention] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _carry_out(targets: Targets, source: str | None, series: Series,
                     backups: list[Backup], decision: Decision, dry_run: bool,
                     outcome: _Outcome, broken: frozenset[str]) -> None:
    """Remove what one series' decision lets go (unless a dry run) and tally the series
    (a base backup whose WAL chain is broken is not a good one)."""
    by_id = {b.id: b for b in backups}
    good_one = partial(counted_in_series, broken=broken)
    gone = removed = 0
    for backup_id, reasons in decision.delete.items():
        backup = by_id[backup_id]
        if not dry_run:
            try:
                await remove_backup(targets, backup, f"retention: {'; '.join(reasons)}")
            except AppError as exc:
                outcome.errors.append(f"backup {backup_id}: {exc.message}")
                continue
        outcome.deleted.append(_item(backup, reasons))
        removed += 1
        gone += good_one(backup)
    outcome.protected += [_item(by_id[i], r) for i, r in decision.protect.items()]
    good = sum(map(good_one, backups))
    outcome.sources.append(SourceRetention(source=source, series=series, good=good,
                                           deleted=removed, good_left=good - gone))


async def apply_retention(settings: Settings, storage: Targets, request: CleanupRequest,
                          now: datetime | None = None) -> CleanupResult:
    """Plan retention for every source (or one) and, unless a dry run, carry it out.
    A backup whose target cannot be reached is reported in `errors`; the run goes on."""
    now = now or utcnow()
    targets = as_targets(settings, storage)
    outcome = _Outcome()
    for source, backups in sorted((await _finished_backups(request.source)).items(),
                                  key=lambda kv: kv[0] or ""):
        broken = await unrestorable_bases(backups)
        for series, part, decision in decide_series(backups, settings, now, broken):
            await _carry_out(targets, source, series, part, decision, request.dry_run,
                             outcome, broken)
    deleted, protected, errors = outcome.deleted, outcome.protected, outcome.errors
    wal = await plan_wal_pruning(targets, request.source, dry_run=request.dry_run,
                                 going={i.id for i in deleted})
    errors += wal.errors
    garbage = await unreferenced_content({i.id for i in deleted}, now,
                                         settings.limits.timeout_seconds)
    gone_content = [o.address for o in garbage]
    if not request.dry_run:
        gone_content = []
        for obj in garbage:
            try:
                await object_storage(targets, obj).delete(obj.storage_key)
                await obj.delete()
            except AppError as exc:
                errors.append(f"content {obj.address}: {exc.message}")
                continue
            gone_content.append(obj.address)
            log.info("content object deleted", address=obj.address,
                     reason="no kept content backup references it")
    result = CleanupResult(dry_run=request.dry_run, evaluated_at=now, deleted=deleted,
                           content_objects_deleted=gone_content,
                           protected=protected, sources=outcome.sources,
                           deleted_count=len(deleted),
                           freed_bytes=sum(i.stored_bytes or 0 for i in deleted), errors=errors,
                           wal_segments_deleted=wal.segments, wal=wal.pruned)
    log.info("retention applied", dry_run=request.dry_run, deleted=len(deleted),
             protected=len(protected), wal_segments=wal.segments, errors=len(errors))
    return result


async def run_cleanup(ctx: JobContext) -> dict[str, Any]:
    """The `cleanup` job handler; fails (after doing what it can) if any deletion failed."""
    ctx.progress.set_phase("cleanup")
    result = await apply_retention(ctx.settings, ctx.all_targets,
                                   params_of(ctx.job, CleanupParams))
    if result.errors:
        raise AppError(f"{len(result.errors)} deletion(s) failed: " + "; ".join(result.errors))
    return result.model_dump(mode="json", by_alias=True)

