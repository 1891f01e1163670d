"""Stuck work: jobs whose replica stopped renewing its lease, and what they left behind.

Every replica sweeps; each step is a conditional update, so two sweeps never
act on the same job or backup twice.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from beanie import PydanticObjectId

from app.models.backup import Backup, BackupStatus
from app.models.common import utcnow
from app.models.job import CANCELLED_BY, RETRYABLE_KINDS, BackupJob, JobKind, JobStatus
from app.services.databases.backup import discard_backup
from app.services.jobs.runner import JobRunner

log = structlog.get_logger(__name__)
LIVE_JOB_STATUSES = (JobStatus.queued.value, JobStatus.running.value)
# An interruption older than this is history, not something to redo now.
RETRY_WINDOW = timedelta(hours=24)


@dataclass
class SweepReport:
    interrupted: list[PydanticObjectId] = field(default_factory=list)
    retried: list[PydanticObjectId] = field(default_factory=list)
    failed_backups: list[PydanticObjectId] = field(default_factory=list)
    partials_removed: int = 0


def _lapsed_outcome(job: BackupJob) -> tuple[JobStatus, str]:
    # A job someone cancelled ends as cancelled (failed), never to be retried.
    if job.cancel_requested_by is not None:
        return JobStatus.failed, CANCELLED_BY + job.cancel_requested_by
    return JobStatus.interrupted, (
        f"Interrupted: replica {job.lease_owner} stopped renewing its lease "
        f"(last heartbeat {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
        if job.heartbeat_at else "Interrupted: its replica stopped")


async def interrupt_lapsed(runner: JobRunner, now: datetime) -> list[BackupJob]:
    """Mark running jobs whose lease ran out as interrupted, and announce them."""
    found: list[BackupJob] = []
    async for job in BackupJob.find({"status": JobStatus.running.value,
                                     "leaseExpiresAt": {"$lt": now}}):
        status, error = _lapsed_outcome(job)
        taken = await BackupJob.get_pymongo_collection().update_one(
            {"_id": job.id, "status": JobStatus.running.value,
             "leaseExpiresAt": job.lease_expires_at},
            {"$set": {"status": status.value, "error": error,
                      "finishedAt": now, "updatedAt": now, "leaseExpiresAt": None}})
        if taken.modified_count:
            job.status, job.error, job.finished_at = status, error, now
            log.warning("job interrupted", job_id=str(job.id), kind=job.kind.value,
                        replica=job.lease_owner)
            await runner.announce(job)
            found.append(job)
    return found


async def retry_interrupted(runner: JobRunner, now: datetime) -> list[PydanticObjectId]:
    """Queue one more run of each recently interrupted job that has attempts left."""
    queued: list[PydanticObjectId] = []
    async for job in BackupJob.find({"status": JobStatus.interrupted.value,
                                     "retryJobId": None, "cancelRequestedAt": None,
                                     "finishedAt": {"$gte": now - RETRY_WINDOW},
                                     "kind": {"$in": [k.value for k in RETRYABLE_KINDS]}}):
        if job.attempts >= job.max_attempts:
            continue
        retry_id = PydanticObjectId()
        taken = await BackupJob.get_pymongo_collection().update_one(
            {"_id": job.id, "retryJobId": None}, {"$set": {"retryJobId": retry_id}})
        if not taken.modified_count:
            continue
        retry = BackupJob(id=retry_id, kind=job.kind, trigger=job.trigger, source=job.source,
                          backup_id=job.backup_id if job.kind is JobKind.verify else None,
                          schedule_id=job.schedule_id, fire_id=job.fire_id,
                          requested_by=job.requested_by, params=job.params,
                          attempts=job.attempts, max_attempts=job.max_attempts,
                          retry_of=job.id)
        await runner.enqueue(retry)
        log.info("interrupted job queued again", job_id=str(job.id), retry_id=str(retry_id))
        queued.append(retry_id)
    return queued


async def fail_abandoned_backups(runner: JobRunner, now: datetime) -> list[PydanticObjectId]:
    """Pending backups whose job is no longer alive: remove their bytes, mark them failed."""
    settings = runner.settings
    lease = timedelta(seconds=settings.system.lease_seconds)
    # A backup written outside a job (none today) is given its full time limit.
    orphan_age = timedelta(seconds=settings.limits.timeout_seconds) + lease
    failed: list[PydanticObjectId] = []
    async for backup in Backup.find({"status": BackupStatus.pending.value}):
        if backup.job_id is not None:
            job = await BackupJob.get(backup.job_id)
            if job is not None and job.status.value in LIVE_JOB_STATUSES:
                continue
            reason = (f"Interrupted: its job ended {job.status.value}" if job else
                      "Interrupted: its job is gone")
        elif backup.updated_at > now - orphan_age:
            continue
        else:
            reason = "Interrupted: nothing has written it within the time limit"
        await discard_backup(runner.targets, backup, reason)
        assert backup.id is not None
        failed.append(backup.id)
    return failed


async def sweep(runner: JobRunner, now: datetime | None = None) -> SweepReport:
    """One pass over stuck work; safe to run on every replica at once."""
    now = now or utcnow()
    report = SweepReport()
    report.interrupted = [j.id for j in await interrupt_lapsed(runner, now) if j.id]
    report.retried = await retry_interrupted(runner, now)
    report.failed_backups = await fail_abandoned_backups(runner, now)
    settings = runner.settings
    stale_after = settings.limits.timeout_seconds + 2 * settings.system.lease_seconds
    # Every target: copies leave partial writes on theirs too; one unreachable target
    # does not keep the others unswept.
    for name, store in runner.targets.stores.items():
        try:
            report.partials_removed += await store.discard_stale_partials(stale_after)
        except Exception:
            log.warning("stale partial writes not swept", target=name, exc_info=True)
    return report
