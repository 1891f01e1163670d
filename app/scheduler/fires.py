"""Fires of a schedule: when it fires, each fire claimed once by one replica (missed ones
recorded), and the jobs one fire queues."""

from datetime import datetime, timedelta

import structlog
from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from app.config import Settings
from app.models.backup import BackupType
from app.models.common import utcnow
from app.models.content import ContentBackupCreate
from app.models.job import BackupJob, JobKind, JobTrigger
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
from app.models.schedule import FireStatus, Schedule, ScheduleFire, ScheduleKind
from app.scheduler.cron import crontab_trigger
from app.scheduler.schedules import BACKUP_KINDS
from app.services.access.auth import system_user_id
from app.services.jobs.runner import JobRunner

log = structlog.get_logger(__name__)
# Enumerating fires of a fine-grained schedule over a long outage stops here.
MAX_OVERDUE = 10_000
JOB_OF_KIND = {ScheduleKind.database: JobKind.database, ScheduleKind.content: JobKind.content,
               ScheduleKind.cleanup: JobKind.cleanup,
               ScheduleKind.stats_report: JobKind.stats_report,
               ScheduleKind.health_check: JobKind.health_check}
JOB_OF_KIND[ScheduleKind.restore_drill] = JobKind.restore_drill
JOB_OF_KIND[ScheduleKind.reverify] = JobKind.reverify
JOB_OF_KIND[ScheduleKind.pitr_basebackup] = JobKind.pitr_basebackup


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


def fire_params(schedule: Schedule, source: str | None, fire: ScheduleFire) -> JobParams:
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
            JOB_OF_KIND[schedule.kind], fire_params(schedule, source, fire), source=source,
            trigger=JobTrigger.schedule, requested_by=author, schedule_id=schedule.id,
            fire_id=fire.id))
    await ScheduleFire.get_pymongo_collection().update_one(
        {"_id": fire.id}, {"$set": {"status": FireStatus.dispatched.value,
                                    "jobIds": [j.id for j in jobs], "updatedAt": utcnow()}})
    log.info("schedule fired", schedule=schedule.name, fire_time=fire.fire_time.isoformat(),
             jobs=len(jobs), catch_up=fire.catch_up)
    return jobs
