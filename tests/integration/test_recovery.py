"""Stuck work: a job whose replica went silent is interrupted, announced and run again."""

from datetime import datetime, timedelta

from beanie import PydanticObjectId
from fastapi import FastAPI

from app.config import Settings
from app.models.backup import Backup, BackupKind, BackupStatus
from app.models.common import utcnow
from app.models.job import BackupJob, JobKind, JobStatus, JobTrigger
from app.services.databases.backup import discard_backup
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.recovery import sweep
from app.services.jobs.runner import JobRunner
from app.services.storage import LocalStorage

# This test sweeps a minute ahead, so the app's own sweeper (every few seconds, on the
# clock) never takes its jobs first, whatever ran before it.
AHEAD = timedelta(seconds=60)


async def orphan(kind: JobKind, lapsed_seconds: float, now: datetime,
                 attempts: int = 2) -> BackupJob:
    """A job as a replica killed mid-run leaves it: running, its lease lapsed at `now`."""
    job = BackupJob(kind=kind, status=JobStatus.running, trigger=JobTrigger.schedule,
                    attempts=1, max_attempts=attempts, lease_owner="ghost:1",
                    heartbeat_at=now - timedelta(seconds=lapsed_seconds + 30),
                    lease_expires_at=now - timedelta(seconds=lapsed_seconds),
                    params={"fireTime": "2026-11-23T00:00:00+00:00"})
    await job.insert()
    return job


async def test_lapsed_lease_is_interrupted_announced_and_retried_once(
        app: FastAPI, settings: Settings) -> None:
    runner = JobRunner(settings, LocalStorage(settings.storage.local_dir), JOB_HANDLERS,
                       replica_id="sweeper")
    heard: list[BackupJob] = []

    async def listen(job: BackupJob) -> None:
        heard.append(job)

    runner.finish_listeners.append(listen)
    then = utcnow() + AHEAD
    stuck = await orphan(JobKind.stats_report, 5, then)
    alive = await orphan(JobKind.stats_report, -60, then)  # lease still valid: left alone
    restore = await orphan(JobKind.restore, 5, then)

    report = await sweep(runner, then)
    assert stuck.id in report.interrupted
    assert restore.id in report.interrupted
    assert alive.id not in report.interrupted
    assert {j.id for j in heard} >= {stuck.id, restore.id}
    assert all(j.status is JobStatus.interrupted for j in heard)

    after = await BackupJob.get(stuck.id)
    assert after is not None
    assert after.status is JobStatus.interrupted
    assert after.error is not None
    assert "replica ghost:1 stopped renewing its lease" in after.error
    assert after.retry_job_id in report.retried
    retry = await BackupJob.get(after.retry_job_id)
    assert retry is not None
    assert (retry.kind, retry.retry_of, retry.attempts) == (JobKind.stats_report, stuck.id, 1)
    assert retry.params == stuck.params
    restored = await BackupJob.get(restore.id)
    assert restored is not None
    assert restored.retry_job_id is None  # a restore is never repeated behind anyone's back

    # Sweeping again (or on another replica) changes nothing.
    again = await sweep(runner, then)
    assert stuck.id not in again.interrupted
    assert after.retry_job_id not in again.retried
    still = await BackupJob.get(alive.id)
    assert still is not None
    assert still.status is JobStatus.running
    await BackupJob.get_pymongo_collection().update_one(
        {"_id": alive.id}, {"$set": {"status": "interrupted", "retryJobId": alive.id}})
    await app.state.runner.wait(retry.id, 60)


async def test_a_given_up_backup_keeps_the_first_reason(app: FastAPI, settings: Settings) -> None:
    # Seen on a loaded machine: the sweep gave a slow replica's backup up (and removed its
    # partial file); the still-running writer then failed on the missing file and replaced
    # "Interrupted ..." with "No such file", which hid what happened.
    storage = LocalStorage(settings.storage.local_dir)
    backup = Backup(source="pg", kind=BackupKind("postgres"), status=BackupStatus.pending,
                    admin=PydanticObjectId(), storage_key="pg/given-up.pgdump.zst.age")
    await backup.insert()
    await discard_backup(storage, backup, "Interrupted: its job ended interrupted")
    await discard_backup(storage, backup, "Storage or network error: No such file")
    stored = await Backup.get(backup.id)
    assert stored is not None
    assert stored.status is BackupStatus.failed
    assert stored.error == "Interrupted: its job ended interrupted"
    await stored.delete()
