"""Schedules: defaults seeded from settings, edits, fires claimed once, and their jobs."""

from datetime import datetime, timedelta

import structlog
from beanie import PydanticObjectId
from pydantic import ValidationError
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from app.config import Settings
from app.errors import ConflictError, InvalidInputError, NotFoundError, validation_details
from app.models.backup import BackupType
from app.models.common import document_alias, utcnow
from app.models.content import ContentBackupCreate
from app.models.job import FINISHED_JOB_STATUSES, BackupJob, JobKind, JobStatus, JobTrigger
from app.models.job_params import (
    CleanupParams,
    ContentParams,
    DatabaseParams,
    DrillParams,
    JobParams,
    PitrBaseBackupParams,
    ReportParams,
    ReverifyParams,
)
from app.models.requests import DatabaseBackupCreate
from app.models.schedule import (
    FireStatus,
    LastRun,
    Schedule,
    ScheduleCreate,
    ScheduleFire,
    ScheduleKind,
    ScheduleOut,
    ScheduleStatus,
    ScheduleUpdate,
    StoredSchedule,
    check_stored,
    describe_error,
    schedule_out,
)
from app.scheduler.cron import checked_trigger, crontab_trigger
from app.services.access.auth import system_user_id
from app.services.databases.backup import check_copy_targets
from app.services.jobs.runner import JobRunner
from app.services.recoverability.drills import check_drill_schedule

log = structlog.get_logger(__name__)
LEGACY_SEEDED = ("daily", "weekly", "monthly", "cleanup", "stats-report", "health-check")
SEEDED_MARKER = "schedules-seeded"
# Enumerating fires of a fine-grained schedule over a long outage stops here.
MAX_OVERDUE = 10_000

BACKUP_KINDS = (ScheduleKind.database, ScheduleKind.content)
JOB_OF_KIND = {ScheduleKind.database: JobKind.database, ScheduleKind.content: JobKind.content,
               ScheduleKind.cleanup: JobKind.cleanup,
               ScheduleKind.stats_report: JobKind.stats_report,
               ScheduleKind.health_check: JobKind.health_check}
JOB_OF_KIND[ScheduleKind.restore_drill] = JobKind.restore_drill
JOB_OF_KIND[ScheduleKind.reverify] = JobKind.reverify
JOB_OF_KIND[ScheduleKind.pitr_basebackup] = JobKind.pitr_basebackup


def default_schedules(settings: Settings) -> list[Schedule]:
    """The schedules a fresh catalog starts with (seed 002's and 004's)."""
    s, tz = settings.schedules, settings.system.timezone
    return [
        Schedule(name="daily", kind=ScheduleKind.database, cron=s.daily, timezone=tz,
                 retention_days=s.daily_retention_days, description="Daily database backups"),
        Schedule(name="weekly", kind=ScheduleKind.database, cron=s.weekly, timezone=tz,
                 retention_days=s.weekly_retention_days,
                 description="Weekly database backups"),
        Schedule(name="monthly", kind=ScheduleKind.database, cron=s.monthly, timezone=tz,
                 retention_days=s.monthly_retention_days,
                 description="Monthly database backups"),
        Schedule(name="cleanup", kind=ScheduleKind.cleanup, cron=s.cleanup, timezone=tz,
                 description="Retention cleanup"),
        Schedule(name="stats-report", kind=ScheduleKind.stats_report, cron=s.stats_report,
                 timezone=tz, description="Weekly stats report"),
        Schedule(name="health-check", kind=ScheduleKind.health_check, cron=s.health_check,
                 timezone=tz, description="Monthly health check"),
        Schedule(name="restore-drill", kind=ScheduleKind.restore_drill,
                 cron=settings.drills.schedule, timezone=tz,
                 enabled=settings.drills.enabled,
                 description="Restore drills of every source (RTO)"),
        Schedule(name="reverify", kind=ScheduleKind.reverify,
                 cron=settings.verification.schedule, timezone=tz,
                 description="Rolling re-verification of kept backups"),
        Schedule(name="pitr-basebackup", kind=ScheduleKind.pitr_basebackup,
                 cron=settings.pitr.base_backup_schedule, timezone=tz,
                 description="Base backups of the PITR sources"),
    ]


async def seed_schedules(settings: Settings) -> int:
    """Create each default schedule once per catalog; returns how many this call made.

    A marker lists the defaults already seeded, so deleted ones stay deleted and a default
    added by a later version is still created once on an existing catalog.
    """
    markers = Schedule.get_pymongo_collection().database["service_markers"]
    marker = await markers.find_one({"_id": SEEDED_MARKER})
    # A marker from before the list seeded the first six defaults.
    done = set(marker.get("names", LEGACY_SEEDED)) if marker else set()
    created, names = 0, []
    for schedule in default_schedules(settings):
        if schedule.name in done:
            continue
        names.append(schedule.name)
        try:
            await schedule.insert()
            created += 1
        except DuplicateKeyError:
            pass  # another replica seeded it first
    if names or marker is None or "names" not in marker:
        listed = [*(LEGACY_SEEDED if marker and "names" not in marker else ()), *names]
        try:
            await markers.update_one(
                {"_id": SEEDED_MARKER},
                {"$addToSet": {"names": {"$each": listed}}, "$setOnInsert": {"at": utcnow()}},
                upsert=True)
        except DuplicateKeyError:  # two replicas upserted at once: add to the one that won
            await markers.update_one({"_id": SEEDED_MARKER},
                                     {"$addToSet": {"names": {"$each": listed}}})
    if created:
        log.info("default schedules created", count=created)
    return created


def _check_copy_targets(settings: Settings, kind: ScheduleKind, names: list[str]) -> None:
    """Only database schedules copy; each name a configured storage target."""
    if names and kind is not ScheduleKind.database:
        raise InvalidInputError("copyTargets only apply to database schedules",
                                [{"field": "copyTargets", "message": "only for database "
                                                                     "schedules"}])
    check_copy_targets(settings, names)


def _check_targets(settings: Settings, kind: ScheduleKind, sources: list[str],
                   retention_days: int | None, copy_targets: list[str]) -> None:
    if kind is ScheduleKind.restore_drill:
        return check_drill_schedule(settings, sources, retention_days, copy_targets)
    if kind is ScheduleKind.pitr_basebackup:
        unknown = [name for name in sources if name not in settings.pitr.sources]
        if unknown:
            raise InvalidInputError(
                f"Not PITR sources: {', '.join(unknown)} (BACKUP_PITR__SOURCES: "
                f"{', '.join(settings.pitr.sources) or 'none'})",
                [{"field": "sources", "message": f"not a PITR source {n!r}"} for n in unknown])
        sources = []  # checked here; retentionDays and copyTargets are refused below
    if kind not in BACKUP_KINDS:
        bad = [f for f, v in (("sources", sources), ("retentionDays", retention_days)) if v]
        if bad:
            raise InvalidInputError(
                f"{', '.join(bad)} only apply to database and content schedules",
                [{"field": f, "message": "only for backup schedules"} for f in bad])
    _check_copy_targets(settings, kind, copy_targets)
    if kind not in BACKUP_KINDS:
        return
    known = ({s.name for s in settings.all_sources()} if kind is ScheduleKind.database
             else {s.name for s in settings.content.sources})
    unknown = [name for name in sources if name not in known]
    if unknown:
        raise InvalidInputError(
            f"Unknown source(s): {', '.join(unknown)} (configured: {', '.join(sorted(known))})",
            [{"field": "sources", "message": f"unknown source {name!r}"} for name in unknown])


async def load_schedules(allow_sub_minute: bool = True) -> list[StoredSchedule]:
    """Every stored schedule by name, read raw so one bad document blocks no other."""
    cursor = Schedule.get_pymongo_collection().find({}).sort("name", ASCENDING)
    return [check_stored(raw, allow_sub_minute) async for raw in cursor]


async def list_schedules() -> list[Schedule]:
    """The stored schedules that are valid documents (see load_schedules for the rest)."""
    return [e.schedule for e in await load_schedules() if e.schedule is not None]


async def find_schedule(schedule_id: PydanticObjectId) -> Schedule | None:
    """The schedule, or None when it is gone or its document is invalid."""
    raw = await Schedule.get_pymongo_collection().find_one({"_id": schedule_id})
    return None if raw is None else check_stored(raw, True).schedule


async def _stored(schedule_id: PydanticObjectId,
                  settings: Settings | None = None) -> StoredSchedule:
    raw = await Schedule.get_pymongo_collection().find_one({"_id": schedule_id})
    if raw is None:
        raise NotFoundError(f"Schedule {schedule_id} not found")
    return check_stored(raw, settings.schedules.allow_sub_minute if settings else True)


async def schedule_views(settings: Settings) -> list[ScheduleOut]:
    """Every schedule by name; one that cannot run is listed with its error."""
    entries = await load_schedules(settings.schedules.allow_sub_minute)
    return [out for out in map(schedule_out, entries) if out is not None]


async def schedule_view(settings: Settings, schedule_id: PydanticObjectId) -> ScheduleOut:
    out = schedule_out(await _stored(schedule_id, settings))
    assert out is not None  # found by an ObjectId
    return out


def _check_timing(settings: Settings, cron: str, timezone: str) -> None:
    """The trigger builds, fires within the horizon, and not sub-minute unless allowed."""
    try:
        checked_trigger(cron, timezone, allow_sub_minute=settings.schedules.allow_sub_minute)
    except ValueError as exc:
        raise InvalidInputError(f"cron: {exc}", [{"field": "cron", "message": str(exc)}]) \
            from exc


async def create_schedule(settings: Settings, body: ScheduleCreate) -> Schedule:
    _check_targets(settings, body.kind, body.sources, body.retention_days, body.copy_targets)
    _check_timing(settings, body.cron, body.timezone)
    schedule = Schedule(**body.model_dump())
    try:
        await schedule.insert()
    except DuplicateKeyError as exc:
        raise ConflictError(f"A schedule named {body.name!r} already exists") from exc
    log.info("schedule created", schedule=schedule.name, cron=schedule.cron)
    return schedule


async def update_schedule(settings: Settings, schedule_id: PydanticObjectId,
                          body: ScheduleUpdate) -> Schedule:
    """Apply the named fields; an invalid stored schedule can be repaired this way."""
    entry = await _stored(schedule_id)
    changes = body.model_dump(exclude_unset=True)
    merged = {**entry.raw, **{document_alias(k): v for k, v in changes.items()},
              "updatedAt": utcnow()}
    try:
        schedule: Schedule = Schedule.model_validate(merged)
    except ValidationError as exc:
        raise InvalidInputError(
            f"The stored schedule is invalid ({describe_error(exc)}): fix those fields in this "
            "request or delete the schedule", validation_details(list(exc.errors()))) from exc
    _check_targets(settings, schedule.kind, schedule.sources, schedule.retention_days,
                   schedule.copy_targets)
    if changes.keys() & {"cron", "timezone"}:
        _check_timing(settings, schedule.cron, schedule.timezone)
    await schedule.save()
    log.info("schedule updated", schedule=schedule.name, fields=sorted(changes))
    return schedule


async def delete_schedule(schedule_id: PydanticObjectId) -> ScheduleOut:
    entry = await _stored(schedule_id)
    await Schedule.get_pymongo_collection().delete_one({"_id": schedule_id})
    log.info("schedule deleted", schedule=entry.name)
    out = schedule_out(entry)
    assert out is not None  # found by an ObjectId
    return out


def next_run(schedule: Schedule, after: datetime) -> datetime | None:
    if not schedule.enabled:
        return None
    nxt: datetime | None = crontab_trigger(schedule.cron, schedule.timezone) \
        .get_next_fire_time(None, after)
    return nxt


def fires_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Fire times t with start < t <= end, oldest first (at most MAX_OVERDUE, the newest)."""
    trigger = crontab_trigger(schedule.cron, schedule.timezone)
    found: list[datetime] = []
    previous: datetime | None = None
    now = start + timedelta(microseconds=1)
    while True:
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt is None or nxt > end:
            return found
        found.append(nxt)
        if len(found) > MAX_OVERDUE:
            found.pop(0)
        previous, now = nxt, nxt + timedelta(microseconds=1)


async def _advance(schedule_id: PydanticObjectId, fire_time: datetime) -> None:
    await Schedule.get_pymongo_collection().update_one(
        {"_id": schedule_id,
         "$or": [{"lastFireAt": None}, {"lastFireAt": {"$lt": fire_time}}]},
        {"$set": {"lastFireAt": fire_time}})


async def claim_fire(schedule: Schedule, fire_time: datetime, replica: str,
                     catch_up: bool = False) -> ScheduleFire | None:
    """The fire's unique lease: only one replica's insert succeeds."""
    assert schedule.id is not None
    fire = ScheduleFire(schedule_id=schedule.id, schedule_name=schedule.name,
                        fire_time=fire_time, replica=replica, catch_up=catch_up)
    try:
        await fire.insert()
    except DuplicateKeyError:
        return None
    await _advance(schedule.id, fire_time)
    return fire


async def record_missed(schedule: Schedule, missed: list[datetime], replica: str) -> None:
    """One record for a run of fires nobody ran (oldest first in `missed`)."""
    if not missed:
        return
    assert schedule.id is not None
    fire = ScheduleFire(schedule_id=schedule.id, schedule_name=schedule.name,
                        fire_time=missed[-1], status=FireStatus.missed, replica=replica,
                        missed_count=len(missed), missed_from=missed[0])
    try:
        await fire.insert()
    except DuplicateKeyError:
        return
    await _advance(schedule.id, missed[-1])
    log.warning("schedule fires missed", schedule=schedule.name, count=len(missed),
                first=missed[0].isoformat(), last=missed[-1].isoformat())


def schedule_targets(settings: Settings, schedule: Schedule) -> list[str | None]:
    """The sources one fire runs a job for (None: one job not tied to a source)."""
    if schedule.kind is ScheduleKind.restore_drill:
        return list(schedule.sources) or [None]
    if schedule.kind is ScheduleKind.pitr_basebackup:
        return list(schedule.sources or settings.pitr.sources)
    if schedule.kind not in BACKUP_KINDS:
        return [None]
    if schedule.sources:
        return list(schedule.sources)
    if schedule.kind is ScheduleKind.content:
        return list(settings.content_source_names())
    return list(settings.enabled_database_sources())


def _params(schedule: Schedule, source: str | None, fire: ScheduleFire) -> JobParams:
    """The params of one job of a fire: each carries the fire's time."""
    notes = f"Scheduled backup ({schedule.name})"
    if schedule.kind is ScheduleKind.database:
        assert source is not None
        return DatabaseParams(fire_time=fire.fire_time, backup_type=BackupType.automatic,
                              request=DatabaseBackupCreate(
                                  source=source, retention_days=schedule.retention_days,
                                  notes=notes, copy_targets=schedule.copy_targets))
    if schedule.kind is ScheduleKind.content:
        assert source is not None
        return ContentParams(fire_time=fire.fire_time, backup_type=BackupType.automatic,
                             request=ContentBackupCreate(
                                 source=source, retention_days=schedule.retention_days,
                                 notes=notes))
    if schedule.kind is ScheduleKind.cleanup:
        return CleanupParams(fire_time=fire.fire_time)
    if schedule.kind is ScheduleKind.restore_drill:
        return DrillParams(fire_time=fire.fire_time, source=source)
    if schedule.kind is ScheduleKind.reverify:
        return ReverifyParams(fire_time=fire.fire_time)
    if schedule.kind is ScheduleKind.pitr_basebackup:
        assert source is not None
        return PitrBaseBackupParams(fire_time=fire.fire_time, source=source,
                                    backup_type=BackupType.automatic)
    return ReportParams(fire_time=fire.fire_time)


async def dispatch(runner: JobRunner, schedule: Schedule, fire: ScheduleFire) -> list[BackupJob]:
    """Queue the fire's jobs; idempotent, so an interrupted dispatch can be redone."""
    assert fire.id is not None
    assert schedule.id is not None
    done = {job.source: job async for job in BackupJob.find({"fireId": fire.id})}
    author = await system_user_id()
    jobs = list(done.values())
    for source in schedule_targets(runner.settings, schedule):
        if source in done:
            continue
        jobs.append(await runner.submit(
            JOB_OF_KIND[schedule.kind], _params(schedule, source, fire), source=source,
            trigger=JobTrigger.schedule, requested_by=author, schedule_id=schedule.id,
            fire_id=fire.id))
    await ScheduleFire.get_pymongo_collection().update_one(
        {"_id": fire.id}, {"$set": {"status": FireStatus.dispatched.value,
                                    "jobIds": [j.id for j in jobs], "updatedAt": utcnow()}})
    log.info("schedule fired", schedule=schedule.name, fire_time=fire.fire_time.isoformat(),
             jobs=len(jobs), catch_up=fire.catch_up)
    return jobs


def _outcome(jobs: list[BackupJob]) -> JobStatus | None:
    newest: dict[str | None, BackupJob] = {}
    for job in sorted(jobs, key=lambda j: j.created_at):
        newest[job.source] = job
    states = {job.status for job in newest.values()}
    for live in (JobStatus.running, JobStatus.queued):
        if live in states:
            return live
    for bad in (JobStatus.failed, JobStatus.interrupted):
        if bad in states:
            return bad
    return JobStatus.completed if states else None


async def last_run(schedule_id: PydanticObjectId) -> LastRun | None:
    fire = await ScheduleFire.find({"scheduleId": schedule_id}).sort("-fireTime").first_or_none()
    if fire is None:
        return None
    jobs = await BackupJob.find({"fireId": fire.id}).to_list() if fire.id else []
    return LastRun(
        fire_time=fire.fire_time, status=fire.status, catch_up=fire.catch_up,
        missed_count=fire.missed_count,
        outcome=_outcome(jobs) if fire.status is not FireStatus.missed else None,
        jobs=[{"id": str(j.id), "source": j.source, "status": j.status.value,
               "error": j.error, "retryOf": str(j.retry_of) if j.retry_of else None,
               "finishedAt": j.finished_at if j.status in FINISHED_JOB_STATUSES else None}
              for j in jobs])


async def schedule_status(now: datetime | None = None,
                          settings: Settings | None = None) -> list[ScheduleStatus]:
    """Each schedule with its last run, that run's outcome, and its next run.

    A schedule that cannot run shows its error and no next run; the others are unaffected.
    Without settings, sub-minute schedules are not reported as errors.
    """
    now = now or utcnow()
    allow_sub_minute = settings.schedules.allow_sub_minute if settings else True
    out = []
    for entry in await load_schedules(allow_sub_minute):
        base = schedule_out(entry)
        if base is None:
            continue
        nxt = None
        if entry.trigger is not None and base.enabled:
            nxt = entry.trigger.get_next_fire_time(None, now)
        out.append(ScheduleStatus(**base.model_dump(), last_run=await last_run(base.id),
                                  next_run=nxt))
    return out
