"""Pruning of old jobs and schedule fires: what goes, what always stays, and the cleanup
job that does it."""

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId

from app.config import Settings
from app.models.backup import Backup
from app.models.common import utcnow
from app.models.drill import DrillResult, RestoreDrill
from app.models.job import BackupJob, JobKind, JobStatus
from app.models.schedule import FireStatus, Schedule, ScheduleFire, ScheduleKind
from app.models.verification import (
    BackupVerification,
    VerificationKind,
    VerificationResult,
)
from app.services.jobs.history import prune_history
from tests.support.accounts import Account

pytestmark = pytest.mark.usefixtures("empty_catalog")


async def job(status: JobStatus, age_days: float, **fields: Any) -> PydanticObjectId:
    when = utcnow() - timedelta(days=age_days)
    finished = when if status.value in ("completed", "failed", "interrupted") else None
    record = BackupJob(kind=JobKind.database, status=status, source="pg", created_at=when,
                       updated_at=when, started_at=when, finished_at=finished, **fields)
    await record.insert()
    assert record.id is not None
    return record.id


async def fire(schedule: Schedule, age_days: float) -> PydanticObjectId:
    when = utcnow() - timedelta(days=age_days)
    record = ScheduleFire(schedule_id=schedule.id, schedule_name=schedule.name, fire_time=when,
                          status=FireStatus.dispatched, created_at=when, updated_at=when)
    await record.insert()
    assert record.id is not None
    return record.id


async def schedule(name: str) -> Schedule:
    record = Schedule(name=f"{name}-{uuid.uuid4().hex[:6]}", kind=ScheduleKind.cleanup,
                      cron="0 3 * * *", enabled=False)
    await record.insert()
    return record


async def existing(model: Any, ids: list[PydanticObjectId]) -> set[PydanticObjectId]:
    return {doc["_id"] async for doc in model.get_pymongo_collection().find(
        {"_id": {"$in": ids}}, {"_id": 1})}


async def seed_history(viewer: Account) -> tuple[dict[str, PydanticObjectId], list[Schedule]]:
    """Back-dated jobs and fires (history_days is 90); names say what must happen."""
    quiet, busy = await schedule("quiet"), await schedule("busy")
    ids = {
        "gone_fire_quiet": await fire(quiet, 200),
        "kept_newest_fire_quiet": await fire(quiet, 120),  # its newest, however old
        "gone_fire_busy": await fire(busy, 100),
        "kept_recent_fire_busy": await fire(busy, 1),
    }
    ids |= {
        "gone_completed": await job(JobStatus.completed, 100),
        "gone_failed": await job(JobStatus.failed, 95),
        "gone_interrupted": await job(JobStatus.interrupted, 365),
        "gone_of_old_fire": await job(JobStatus.completed, 100, fire_id=ids["gone_fire_busy"]),
        "kept_running": await job(JobStatus.running, 200),
        "kept_queued": await job(JobStatus.queued, 200),
        "kept_recent": await job(JobStatus.completed, 80),
        "kept_of_newest_fire": await job(JobStatus.completed, 120,
                                         fire_id=ids["kept_newest_fire_quiet"],
                                         schedule_id=quiet.id),
        "kept_wrote_a_backup": await job(JobStatus.completed, 150),
    }
    backup = Backup(admin=viewer.user.id, status="completed", source="pg",
                    job_id=ids["kept_wrote_a_backup"])
    await backup.insert()
    return ids, [quiet, busy]


async def test_prune_deletes_old_finished_history_and_keeps_the_rest(
        settings: Settings, client: httpx.AsyncClient, viewer: Account) -> None:
    ids, (quiet, busy) = await seed_history(viewer)
    jobs = [v for k, v in ids.items() if "fire" not in k or k.startswith(("gone_of", "kept_of"))]
    fires = [ids[k] for k in ("gone_fire_quiet", "kept_newest_fire_quiet", "gone_fire_busy",
                              "kept_recent_fire_busy")]

    # Other modules' schedules may have left fires: only this test's jobs are counted exactly.
    preview = await prune_history(settings, dry_run=True)
    assert preview["jobsDeleted"] == 4
    assert preview["firesDeleted"] >= 2
    assert await existing(BackupJob, jobs) == set(jobs)  # a dry run deletes nothing

    result = await prune_history(settings)
    assert result["historyDays"] == 90
    assert result["jobsDeleted"] == 4
    assert result["firesDeleted"] >= 2
    kept = {k for k, v in ids.items() if v in await existing(BackupJob, jobs)
            | await existing(ScheduleFire, fires)}
    assert kept == {k for k in ids if k.startswith("kept_")}

    # The schedule's status still shows its last run, with that run's job.
    status = await client.get("/api/backups/schedule/status", headers=viewer.headers)
    mine = next(s for s in status.json() if s["id"] == str(quiet.id))
    assert mine["lastRun"]["outcome"] == "completed"
    assert [j["id"] for j in mine["lastRun"]["jobs"]] == [str(ids["kept_of_newest_fire"])]
    # A backup whose job was kept still leads to it.
    assert (await client.get(f"/api/backups/jobs/{ids['kept_wrote_a_backup']}",
                             headers=viewer.headers)).status_code == 200
    await Schedule.find({"_id": {"$in": [quiet.id, busy.id]}}).delete()


async def test_cleanup_job_prunes_history_and_reports_it(
        client: httpx.AsyncClient, admin: Account, viewer: Account) -> None:
    ids, schedules = await seed_history(viewer)
    response = await client.post("/api/backups/cleanup", params={"wait": "true"}, json={},
                                 headers=admin.headers)
    assert response.status_code in (200, 202), response.text
    body = response.json()
    assert body["status"] == "completed", body
    history = body["result"]["history"]
    assert history["jobsDeleted"] == 4
    assert history["firesDeleted"] >= 2
    assert datetime.fromisoformat(history["cutoff"]) < utcnow() - timedelta(days=89)
    assert await existing(BackupJob, [ids["gone_completed"]]) == set()
    assert await existing(BackupJob, [ids["kept_running"]]) == {ids["kept_running"]}
    await Schedule.find({"_id": {"$in": [s.id for s in schedules]}}).delete()


async def test_prune_drops_old_verification_and_drill_records(settings: Settings) -> None:
    now, source = utcnow(), f"hist-{uuid.uuid4().hex[:6]}"
    old, recent = now - timedelta(days=200), now - timedelta(days=1)
    checks = [BackupVerification(backup_id=PydanticObjectId(), source=source, at=at,
                                 kind=VerificationKind.quick, result=VerificationResult.passed)
              for at in (old, recent)]
    drills = [RestoreDrill(source=source, started_at=at, result=DrillResult.failed)
              for at in (old - timedelta(days=1), old)]
    lonely = RestoreDrill(source=source + "-b", started_at=old, result=DrillResult.passed)
    # An old dump drill stays beside a newer PITR drill of its source.
    pitr = RestoreDrill(source=source + "-b", started_at=recent, result=DrillResult.passed,
                        mode="pitr")
    for record in [*checks, *drills, lonely, pitr]:
        await record.insert()
    try:
        await prune_history(settings)
        assert await BackupVerification.find({"source": source}).count() == 1  # the recent
        # Each source keeps its newest drill of each mode, however old: health reads them.
        assert [d.id for d in await RestoreDrill.find({"source": source}).to_list()] == [
            drills[1].id]
        assert await RestoreDrill.get(lonely.id) is not None
        assert await RestoreDrill.get(pitr.id) is not None
    finally:
        await BackupVerification.find({"source": source}).delete()
        await RestoreDrill.find({"source": {"$in": [source, source + "-b"]}}).delete()
