"""Restore drills: which sources and backups, the job, notifications, the list with RTO
trends and what health reports about them."""

import asyncio
from typing import Any

import structlog
from beanie import PydanticObjectId

from app.config import Settings
from app.errors import InvalidInputError
from app.models.backup import GOOD_STATUSES, Backup, BackupKind, VerificationState
from app.models.common import ApiSchema
from app.models.drill import DrillResult, RestoreDrill, RestoreDrillOut
from app.models.job import BackupJob, JobKind, JobStatus, JobTrigger
from app.models.job_params import DrillParams, params_of
from app.services.databases.kinds import in_other_format
from app.services.jobs.runner import JobContext, JobRunner, Progress, error_text
from app.services.ops.notify import Event, Message, send
from app.services.recoverability.content_drill import drill_content
from app.services.recoverability.pitr_drill import drill_pitr, has_pitr_drill
from app.services.recoverability.restore_drill import close_record, drill_database
from app.services.recoverability.scratch import drop_scratch, scratch_source
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)


def drill_sources(settings: Settings) -> list[str]:
    """What "every source" means for drills: enabled database sources and content sources,
    less those whose drills are switched off."""
    names = [*settings.enabled_database_sources(), *settings.content_source_names()]
    return [n for n in names if settings.drills.for_source(n).enabled]


def check_drill_source(settings: Settings, source: str | None) -> None:
    if source is not None and source not in drill_sources(settings):
        known = ", ".join(drill_sources(settings)) or "none"
        raise InvalidInputError(f"Unknown source {source!r} for drills (configured: {known})",
                                [{"field": "source", "message": "unknown source"}])


def check_drill_schedule(settings: Settings, sources: list[str], retention_days: int | None,
                         copy_targets: list[str]) -> None:
    """A restore_drill schedule: its sources (empty: all) must be drillable sources."""
    bad = [f for f, v in (("retentionDays", retention_days), ("copyTargets", copy_targets)) if v]
    if bad:
        raise InvalidInputError(f"{', '.join(bad)} do not apply to restore_drill schedules",
                                [{"field": f, "message": "not for drill schedules"}
                                 for f in bad])
    unknown = [name for name in sources if name not in drill_sources(settings)]
    if unknown:
        raise InvalidInputError(
            f"Unknown source(s) for drills: {', '.join(unknown)}",
            [{"field": "sources", "message": f"unknown source {name!r}"} for name in unknown])


async def submit_drill(runner: JobRunner, source: str | None,
                       requested_by: PydanticObjectId | None,
                       trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `restore_drill` job of one source, or of every source when None."""
    check_drill_source(runner.settings, source)
    return await runner.submit(JobKind.restore_drill, DrillParams(source=source),
                               source=source, trigger=trigger, requested_by=requested_by)


async def newest_good_backup(source: str) -> Backup | None:
    """The newest completed backup of a source that has not failed verification."""
    found = await Backup.find({"source": source}).to_list()
    good = [b for b in found if b.status in GOOD_STATUSES and b.safety_for is None
            and b.storage_key and b.verification.state is not VerificationState.failed
            and not in_other_format(b)]
    return max(good, key=lambda b: b.created_at, default=None)


async def settle_interrupted(settings: Settings, name: str) -> int:
    """Drills of a source left running by a stopped service: failed, and their scratch
    database dropped (unless failures are kept). Returns how many."""
    settled = 0
    running = {"source": name, "result": DrillResult.running.value}
    for record in await RestoreDrill.find(running).to_list():
        job = await BackupJob.get(record.job_id) if record.job_id else None
        if job is not None and job.status in (JobStatus.queued, JobStatus.running):
            continue
        close_record(record, "interrupted: the drill did not finish")
        source = settings.source(name)
        if record.scratch_database and source and not settings.drills.keep_failed:
            try:
                await drop_scratch(settings, scratch_source(settings, source),
                                   record.scratch_database)
            except Exception as exc:
                log.warning("scratch database of an interrupted drill not dropped",
                            database=record.scratch_database, error=error_text(exc))
        record.kept = bool(record.scratch_database) and settings.drills.keep_failed
        await record.save()
        settled += 1
    return settled


async def drill_source(settings: Settings, targets: StorageTargets, name: str,
                       job_id: PydanticObjectId | None, progress: Progress) -> RestoreDrill:
    """Drill one source into a new record, whatever happens."""
    await settle_interrupted(settings, name)
    backup = await newest_good_backup(name)
    record = RestoreDrill(source=name, backup_id=backup.id if backup else None, job_id=job_id,
                          rto_target_s=settings.drills.rto_target(name))
    await record.insert()
    try:
        if backup is None:
            close_record(record, "no good backup of this source to restore")
        elif backup.kind is BackupKind.content:
            await drill_content(settings, targets, backup, record, progress)
            close_record(record)
        else:
            source = settings.source(name)
            if source is None:
                close_record(record, "the source is not configured any more")
            else:
                await drill_database(settings, targets, source, backup, record, progress)
    except asyncio.CancelledError:
        close_record(record, "the drill was cancelled")
        await asyncio.shield(record.save())
        raise
    except Exception as exc:
        close_record(record, str(exc) or type(exc).__name__)
    await record.save()
    log.info("restore drill done", source=name, result=record.result.value, rto_s=record.rto_s,
             failures=record.failures[:3])
    return record


async def _notify_over_target(settings: Settings, record: RestoreDrill) -> None:
    """A drill that passed but took longer than its target (failures fail the job, which
    notifies as every failed job does)."""
    if record.result is DrillResult.passed and record.over_target:
        what = "PITR drill" if record.mode == "pitr" else "restore drill"
        await send(settings, Message(
            Event.backup_failed, f"Backvault: {what} of {record.source} over its RTO",
            f"source: {record.source}\nRTO: {record.rto_s} s\ntarget: {record.rto_target_s} s"
            f"\nphases: {record.phases}", failure=True))


async def _drill_one(ctx: JobContext, name: str, every: bool) -> list[RestoreDrill]:
    """A source's dump drill, and its PITR drill when it is a PITR source with a base
    backup. A named source with neither still gets a (failing) dump drill; "every source"
    skips it."""
    pitr = await has_pitr_drill(ctx.settings, name)
    dump = await newest_good_backup(name) is not None
    records = []
    if dump or not (pitr or every):
        records.append(await drill_source(ctx.settings, ctx.all_targets, name, ctx.job.id,
                                          ctx.progress))
    if pitr:
        if not dump:  # drill_source settles leftovers of a stopped service; do it here
            await settle_interrupted(ctx.settings, name)
        records.append(await drill_pitr(ctx.settings, ctx.all_targets, name, ctx.job.id,
                                        ctx.progress))
    return records


async def run_restore_drill(ctx: JobContext) -> dict[str, Any]:
    """The `restore_drill` job handler: one source, or every source that has a backup (a
    dump, or a PITR base backup)."""
    params = params_of(ctx.job, DrillParams)
    names = [params.source] if params.source else drill_sources(ctx.settings)
    records = []
    for name in names:
        for record in await _drill_one(ctx, name, every=params.source is None):
            await _notify_over_target(ctx.settings, record)
            records.append(record)
    failed = [r for r in records if r.result is DrillResult.failed]
    if failed:
        raise ValueError("Restore drill failed: " + "; ".join(
            f"{r.source}{' (pitr)' if r.mode == 'pitr' else ''}: {', '.join(r.failures[:3])}"
            for r in failed))
    return {"drills": [{"drillId": str(r.id), "source": r.source, "mode": r.mode,
                        "result": r.result.value, "rtoS": r.rto_s,
                        "overTarget": r.over_target} for r in records]}


class RtoTrend(ApiSchema):
    source: str
    # One trend per source and mode: a PITR drill's RTO is not a dump drill's.
    mode: str
    rto_target_s: float | None
    last_result: DrillResult
    # Newest first: the RTO of each of the last `drills.trend` finished drills.
    rto_s: list[float | None]


class DrillList(ApiSchema):
    items: list[RestoreDrillOut]
    trends: list[RtoTrend]


async def list_drills(settings: Settings, source: str | None, limit: int) -> DrillList:
    """Drills, newest first, and the RTO trend of each source and mode."""
    query: dict[str, Any] = {"source": source} if source else {}
    drills = await RestoreDrill.find(query).to_list()
    drills.sort(key=lambda d: d.started_at, reverse=True)
    by_source: dict[tuple[str, str], list[RestoreDrill]] = {}
    for drill in drills:
        if drill.result is not DrillResult.running:
            by_source.setdefault((drill.source, drill.mode), []).append(drill)
    trends = [RtoTrend(source=name, mode=mode, rto_target_s=settings.drills.rto_target(name),
                       last_result=done[0].result,
                       rto_s=[d.rto_s for d in done[:settings.drills.trend]])
              for (name, mode), done in sorted(by_source.items())]
    return DrillList(items=[RestoreDrillOut.model_validate(d) for d in drills[:limit]],
                     trends=trends)

