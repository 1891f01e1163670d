"""Cancelling a job: a queued one at once, a running one on whichever replica runs it."""

import structlog
from beanie import PydanticObjectId
from pymongo import ReturnDocument

from app.errors import ConflictError
from app.models.common import utcnow
from app.models.job import CANCELLED_BY, FINISHED_JOB_STATUSES, BackupJob, JobStatus
from app.services.catalog.queries import get_job
from app.services.jobs.runner import JobRunner

log = structlog.get_logger(__name__)


async def cancel_job(runner: JobRunner, job_id: PydanticObjectId, username: str) -> BackupJob:
    """Cancel a queued job at once; mark a running one so that whichever replica runs it
    stops it (at once on this one, at its next heartbeat elsewhere). It ends failed,
    "cancelled by <username>"; the backup it was writing is discarded."""
    reason, now = CANCELLED_BY + username, utcnow()
    mark = {"cancelRequestedAt": now, "cancelRequestedBy": username, "updatedAt": now}
    jobs = BackupJob.get_pymongo_collection()
    raw = await jobs.find_one_and_update(
        {"_id": job_id, "status": JobStatus.queued.value},
        {"$set": {**mark, "status": JobStatus.failed.value, "error": reason,
                  "finishedAt": now, "leaseExpiresAt": None}},
        return_document=ReturnDocument.AFTER)
    if raw is not None:
        cancelled: BackupJob = BackupJob.model_validate(raw)
        log.warning("job cancelled", job_id=str(job_id), kind=cancelled.kind.value,
                    error=reason)
        await runner.announce(cancelled)
        return cancelled
    # Running (or just claimed): the first request's name stands.
    await jobs.update_one(
        {"_id": job_id, "status": JobStatus.running.value, "cancelRequestedAt": None},
        {"$set": mark})
    job = await get_job(job_id)
    if job.status in FINISHED_JOB_STATUSES:
        raise ConflictError(f"Job {job_id} has already finished ({job.status.value})",
                            {"status": job.status.value})
    if job.cancel_requested_by is not None:
        runner.cancel_here(job_id, CANCELLED_BY + job.cancel_requested_by)
    log.info("job cancel requested", job_id=str(job_id), by=username, replica=job.lease_owner)
    return job
