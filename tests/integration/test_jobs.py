"""Jobs: queued → running → completed, progress visible while running, bounded concurrency."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.models.job import BackupJob, JobKind, JobStatus, JobTrigger
from app.models.requests import DatabaseBackupCreate
from app.services.databases.backup import submit_database_backup
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.runner import JobRunner
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.big_source import with_changes
from tests.support.settings import RUN

pytestmark = pytest.mark.usefixtures("source_databases")


@pytest.fixture
async def slow_runner(app: FastAPI, settings: Settings, big: str) -> AsyncIterator[JobRunner]:
    """The app's runner paused, and one whose jobs are slow enough to watch."""
    await app.state.runner.stop()
    # A job another test left running (a killed process's) would still hold a slot.
    await BackupJob.get_pymongo_collection().update_many(
        {"status": "running"}, {"$set": {"status": "interrupted", "leaseExpiresAt": None}})
    slow = with_changes(settings, limits={"bandwidth_mbps": 8.0, "max_concurrent_jobs": 2})
    runner = JobRunner(slow, LocalStorage(slow.storage.local_dir), JOB_HANDLERS,
                       replica_id="slow-test-runner")
    runner.start()
    yield runner
    await runner.stop()
    app.state.runner.start()


async def test_progress_and_concurrency(slow_runner: JobRunner, client: httpx.AsyncClient,
                                        admin: Account) -> None:
    jobs = [await submit_database_backup(slow_runner, DatabaseBackupCreate(source="big"),
                                         admin.user.id) for _ in range(3)]
    ids = [j.id for j in jobs]
    most_running, saw_queued_while_full, progress_seen = 0, False, 0
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        states = await BackupJob.find({"_id": {"$in": ids}}).to_list()
        running = [j for j in states if j.status == "running"]
        most_running = max(most_running, len(running))
        if len(running) == 2 and any(j.status == "queued" for j in states):
            saw_queued_while_full = True
        for job in running:
            detail = (await client.get(f"/api/backups/jobs/{job.id}",
                                       headers=admin.headers)).json()
            if detail["progress"]["bytesRead"] > 0 and detail["progress"]["phase"] == "dumping":
                progress_seen += 1
        if all(j.status in ("completed", "failed") for j in states):
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    assert [j.status for j in states] == ["completed"] * 3, [j.error for j in states]
    assert most_running == 2
    assert saw_queued_while_full
    assert progress_seen > 0
    for job in states:
        assert job.progress.bytes_read > job.progress.bytes_written > 0
        assert job.attempts == 1
        assert job.lease_owner == "slow-test-runner"
        assert job.started_at is not None
        assert job.finished_at is not None


async def test_a_job_stored_before_params_were_typed_still_runs(app: FastAPI,
                                                                settings: Settings) -> None:
    # A scheduled cleanup as an earlier version queued it: its fire time in isoformat.
    runner = JobRunner(settings, LocalStorage(settings.storage.local_dir), JOB_HANDLERS,
                       replica_id=f"old-params-{RUN}", runs_own_jobs=True)
    source = f"old-params-{RUN}"
    job = BackupJob(kind=JobKind.cleanup, trigger=JobTrigger.schedule, source=source,
                    params={"dryRun": True, "source": source,
                            "fireTime": "2026-03-01T05:00:00+00:00"})
    await runner.enqueue(job)
    done = await runner.run_now(job)
    assert done.status is JobStatus.completed, done.error
    assert done.result["dryRun"] is True
    assert done.result["deletedCount"] == 0


async def test_a_job_with_params_of_no_known_shape_fails_with_a_reason(
        app: FastAPI, settings: Settings) -> None:
    runner = JobRunner(settings, LocalStorage(settings.storage.local_dir), JOB_HANDLERS,
                       replica_id=f"bad-params-{RUN}", runs_own_jobs=True)
    job = BackupJob(kind=JobKind.cleanup, source=f"bad-params-{RUN}",
                    params={"dryRun": True, "purgeEverything": True})
    await runner.enqueue(job)
    done = await runner.run_now(job)
    assert done.status is JobStatus.failed
    assert done.error
    assert "purgeEverything" in done.error
