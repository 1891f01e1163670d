"""The service's status now: scheduler, active jobs with rate and ETA, per-kind totals."""

from collections import Counter
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId, SortDirection

from app.config import Settings
from app.models.backup import GOOD_STATUSES, Backup, BackupKind, BackupStatus
from app.models.common import utcnow
from app.models.dashboard import (
    ActiveJob,
    BackupsStatus,
    JobProgressView,
    KindStatus,
    SchedulerState,
)
from app.models.job import BackupJob, JobKind, JobStatus
from app.services.catalog.dashboard import last_backup
from app.services.catalog.retention import GOOD_FILTER
from app.services.catalog.upcoming import enabled_schedules

LIVE = [JobStatus.queued.value, JobStatus.running.value]
# Jobs whose bytes are the stored object of the backup they name.
READS_STORED = (JobKind.verify, JobKind.restore)


def _ratio(done: float, total: float | None) -> float | None:
    return done / total if total else None


def progress_view(job: BackupJob, bytes_total: int | None, estimated: bool,
                  now: datetime) -> JobProgressView:
    """Rate from the bytes read since the job started; ETA from items, else bytes, left."""
    p = job.progress
    done = p.bytes_read or p.bytes_written
    elapsed = (now - job.started_at).total_seconds() if job.started_at else 0.0
    rate = done / elapsed if elapsed > 0 and job.status is JobStatus.running else None
    fraction = (_ratio(p.items_done, p.items_total) if p.items_total
                else _ratio(done, bytes_total))
    eta = None
    if fraction is not None and 0 < fraction < 1 and elapsed > 0:
        eta = round(elapsed * (1 - fraction) / fraction, 1)
    return JobProgressView(
        phase=p.phase, message=p.message, bytes_done=done, bytes_total=bytes_total,
        bytes_total_estimated=estimated, items_done=p.items_done, items_total=p.items_total,
        rate_bytes_per_second=round(rate, 1) if rate is not None else None,
        eta_seconds=eta,
        percent=round(min(fraction, 1.0) * 100, 1) if fraction is not None else None)


async def _bytes_total(job: BackupJob) -> tuple[int | None, bool]:
    """The stored size a verify or restore reads; a database backup's estimate is the
    plaintext of its source's previous good backup."""
    if job.kind in READS_STORED and job.backup_id is not None:
        backup = await Backup.get(job.backup_id)
        return (backup.stored_bytes if backup else None), False
    if job.kind is JobKind.database and job.source:
        previous = await last_backup({"source": job.source, **GOOD_FILTER})
        return (previous.plaintext_bytes if previous else None), True
    return None, False


async def active_jobs(now: datetime) -> list[ActiveJob]:
    """Queued and running jobs, oldest first."""
    jobs = await (BackupJob.find({"status": {"$in": LIVE}})
                  .sort([("createdAt", SortDirection.ASCENDING)]).to_list())
    out = []
    for job in jobs:
        assert job.id is not None
        total, estimated = await _bytes_total(job)
        out.append(ActiveJob(
            id=job.id, kind=job.kind, status=job.status, trigger=job.trigger,
            source=job.source, backup_id=job.backup_id, created_at=job.created_at,
            started_at=job.started_at, progress=progress_view(job, total, estimated, now)))
    return out


async def _kind_statuses(settings: Settings) -> tuple[KindStatus, KindStatus]:
    """Database and content backups' totals (the trash apart) and the newest of each,
    from one pass over the catalog."""
    counts: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    newest: dict[bool, tuple[datetime, PydanticObjectId]] = {}
    projection = {"status": 1, "kind": 1, "createdAt": 1}
    async for doc in Backup.get_pymongo_collection().find({}, projection):
        if doc.get("kind") is None or doc.get("status") == BackupStatus.deleted.value:
            continue
        content = doc["kind"] == BackupKind.content.value
        counts[content][str(doc.get("status"))] += 1
        if doc.get("createdAt") and (content not in newest
                                     or doc["createdAt"] > newest[content][0]):
            newest[content] = (doc["createdAt"], doc["_id"])
    enabled = {False: bool(settings.enabled_database_sources()),
               True: bool(settings.content_source_names())}
    found = []
    for content in (False, True):
        tally = counts[content]
        last = await last_backup({"_id": newest[content][1]}) if content in newest else None
        found.append(KindStatus(enabled=enabled[content], last_backup=last,
                                total=sum(tally.values()),
                                failed=tally[BackupStatus.failed.value],
                                successful=sum(tally[s.value] for s in GOOD_STATUSES)))
    return found[0], found[1]


async def backups_status(settings: Settings, scheduler_running: bool,
                         now: datetime | None = None) -> BackupsStatus:
    """The scheduler's state, the active jobs, and database and content backups' totals."""
    now = now or utcnow()
    upcoming = await enabled_schedules(settings, now)
    fires = [u.at for u in upcoming if u.at is not None]
    database, content = await _kind_statuses(settings)
    return BackupsStatus(
        scheduler=SchedulerState(running=scheduler_running, schedules=len(upcoming),
                                 next_run=min(fires, default=None)),
        max_concurrent=settings.limits.max_concurrent_jobs,
        active_jobs=await active_jobs(now),
        database=database, content=content,
        timestamp=now)


def scheduler_running(state: Any) -> bool:
    """Whether the app's schedule service (app.state.schedules) has its scheduler started."""
    service = getattr(state, "schedules", None)
    return bool(service is not None and service.scheduler.running)
