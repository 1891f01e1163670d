"""Cancel: a queued job at once, a running one on whichever replica runs it; nothing partial
remains; a cancelled job is never retried; a service stop is still an interruption."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI

from app.config import Settings
from app.models.backup import Backup, BackupStatus
from app.models.common import utcnow
from app.models.job import BackupJob, JobKind, JobStatus, JobTrigger
from app.models.requests import DatabaseBackupCreate
from app.services.databases.backup import submit_database_backup
from app.services.jobs.cancel import cancel_job
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.recovery import sweep
from app.services.jobs.runner import JobRunner
from tests.support.accounts import Account
from tests.support.data import create_big_pg_database
from tests.support.delete_cancel import app_runner_paused, files_of, store, with_source
from tests.support.settings import PG_URI, RUN, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases")
BIG_DB = f"bv_cancel_{RUN}"


@pytest.fixture(scope="module")
async def slow(app: FastAPI) -> Settings:
    """Settings with a `slow` source whose backup takes many seconds (1 MB/s stored)."""
    await create_big_pg_database(PG_URI, BIG_DB)  # dropped with the run's other databases
    settings: Settings = app.state.settings
    return with_source(settings, "slow", pg_uri(BIG_DB), limits={"bandwidth_mbps": 1.0})


@pytest.fixture
async def slow_runner(app: FastAPI, slow: Settings) -> AsyncIterator[JobRunner]:
    """Another replica running the jobs (the app's runner paused), slowly."""
    async with app_runner_paused(app):
        runner = JobRunner(slow, store(slow), JOB_HANDLERS, replica_id=f"cancel-{RUN}")
        runner.start()
        yield runner
        await runner.stop()


async def running_backup(runner: JobRunner, admin: Account) -> tuple[BackupJob, Backup]:
    """A backup job of `slow` that has stored some bytes, and its pending backup."""
    job = await submit_database_backup(runner, DatabaseBackupCreate(source="slow"),
                                       admin.user.id)
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        current = await BackupJob.get(job.id)
        assert current is not None
        if current.backup_id is not None and current.progress.bytes_written > 256 * 1024:
            backup = await Backup.get(current.backup_id)
            assert backup is not None
            assert backup.status is BackupStatus.pending
            return current, backup
        assert current.status in (JobStatus.queued, JobStatus.running), current.error
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)


async def assert_cancelled(slow: Settings, job_id: PydanticObjectId | None, backup: Backup,
                           username: str) -> BackupJob:
    job = await BackupJob.get(job_id)
    assert job is not None
    assert (job.status, job.error) == (JobStatus.failed, f"cancelled by {username}")
    after = await Backup.get(backup.id)
    assert after is not None
    assert (after.status, after.error) == (BackupStatus.failed, f"cancelled by {username}")
    assert files_of(slow, str(backup.id)) == []  # no object, manifest or partial file
    return job


async def test_cancel_a_queued_job(app: FastAPI, client: httpx.AsyncClient, admin: Account,
                                   viewer: Account) -> None:
    async with app_runner_paused(app):
        queued = await client.post("/api/backups/database", json={"source": "pg"},
                                   headers=admin.headers)
        job_id = queued.json()["id"]
        denied = await client.post(f"/api/backups/jobs/{job_id}/cancel", headers=viewer.headers)
        assert denied.status_code == 403
        done = await client.post(f"/api/backups/jobs/{job_id}/cancel", headers=admin.headers)
        assert done.status_code == 200, done.text
        body = done.json()
        assert (body["status"], body["error"]) == ("failed", f"cancelled by {admin.user.username}")
        assert body["cancelRequestedBy"] == admin.user.username
        assert body["finishedAt"] is not None
    # The runner is back: the job is never run.
    await asyncio.sleep(1.5)
    job = await BackupJob.get(PydanticObjectId(job_id))
    assert job is not None
    assert (job.status, job.attempts, job.backup_id) == (JobStatus.failed, 0, None)
    assert await Backup.find({"jobId": job.id}).count() == 0
    again = await client.post(f"/api/backups/jobs/{job_id}/cancel", headers=admin.headers)
    assert again.status_code == 409
    assert "already finished (failed)" in again.json()["error"]["message"]
    unknown = await client.post(f"/api/backups/jobs/{PydanticObjectId()}/cancel",
                                headers=admin.headers)
    assert unknown.status_code == 404


async def test_cancel_a_running_backup_on_another_replica(
        slow_runner: JobRunner, slow: Settings, client: httpx.AsyncClient,
        admin: Account) -> None:
    job, backup = await running_backup(slow_runner, admin)
    asked = await client.post(f"/api/backups/jobs/{job.id}/cancel?wait=true",
                              headers=admin.headers)
    assert asked.status_code == 200, asked.text
    assert asked.json()["status"] == "failed"
    cancelled = await assert_cancelled(slow, job.id, backup, admin.user.username)
    assert cancelled.cancel_requested_at is not None
    assert cancelled.lease_owner == slow_runner.replica_id
    finished = await client.post(f"/api/backups/jobs/{job.id}/cancel", headers=admin.headers)
    assert finished.status_code == 409
    # Never retried: not by the sweep, nor by the runner.
    report = await sweep(slow_runner)
    assert job.id not in report.interrupted
    assert await BackupJob.find({"retryOf": job.id}).count() == 0


async def test_cancel_on_the_replica_running_it_is_immediate(
        slow_runner: JobRunner, slow: Settings, admin: Account) -> None:
    job, backup = await running_backup(slow_runner, admin)
    assert job.id is not None
    asked = await cancel_job(slow_runner, job.id, "operator")
    assert asked.cancel_requested_by == "operator"
    ended = await slow_runner.wait(job.id, 10)
    assert ended.status is JobStatus.failed
    await assert_cancelled(slow, job.id, backup, "operator")


async def test_a_service_stop_is_still_an_interruption(slow: Settings, admin: Account,
                                                       app: FastAPI) -> None:
    async with app_runner_paused(app):
        runner = JobRunner(slow, store(slow), JOB_HANDLERS, replica_id=f"stopping-{RUN}")
        runner.start()
        job, backup = await running_backup(runner, admin)
        await runner.stop()
    stopped = await BackupJob.get(job.id)
    assert stopped is not None
    assert stopped.status is JobStatus.interrupted
    assert stopped.error == "The service stopped while the job ran"
    after = await Backup.get(backup.id)
    assert after is not None
    assert after.status is BackupStatus.failed
    assert "the service stopped" in str(after.error)
    assert files_of(slow, str(backup.id)) == []
    # Keep the sweep of later tests from retrying it.
    await BackupJob.get_pymongo_collection().update_one(
        {"_id": job.id}, {"$set": {"retryJobId": PydanticObjectId()}})


async def test_a_cancelled_job_whose_replica_died_is_not_retried(
        app: FastAPI, settings: Settings) -> None:
    now = utcnow()
    job = BackupJob(kind=JobKind.stats_report, status=JobStatus.running,
                    trigger=JobTrigger.schedule, attempts=1, max_attempts=3,
                    lease_owner="ghost:2", heartbeat_at=now - timedelta(seconds=40),
                    lease_expires_at=now - timedelta(seconds=5),
                    cancel_requested_at=now - timedelta(seconds=20),
                    cancel_requested_by="someone")
    await job.insert()
    runner = JobRunner(settings, store(settings), JOB_HANDLERS, replica_id="sweeper-cancel")
    report = await sweep(runner)
    after = await BackupJob.get(job.id)
    assert after is not None
    assert (after.status, after.error) == (JobStatus.failed, "cancelled by someone")
    assert after.retry_job_id is None
    assert not any([await BackupJob.find({"retryOf": job.id}).count(),
                    job.id in report.retried])
