"""Schedules: CRUD and validation, seeding, one run per fire, catch-up, live edits, status."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId

from app.config import Settings
from app.errors import InvalidInputError
from app.models.common import utcnow
from app.models.job import BackupJob, JobKind, JobStatus
from app.models.schedule import (
    FireStatus,
    Schedule,
    ScheduleCreate,
    ScheduleFire,
    ScheduleKind,
)
from app.scheduler import fires, schedules
from app.scheduler.service import ScheduleService
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.runner import JobRunner
from app.services.storage import LocalStorage
from tests.support.accounts import Account

pytestmark = pytest.mark.usefixtures("source_databases")


def service(settings: Settings, replica: str, **schedule_settings: Any) -> ScheduleService:
    enabled = settings.model_copy(update={
        "system": settings.system.model_copy(update={"enabled": True}),
        "schedules": settings.schedules.model_copy(update=schedule_settings)})
    runner = JobRunner(enabled, LocalStorage(enabled.storage.local_dir), JOB_HANDLERS,
                       replica_id=replica)
    return ScheduleService(runner)


async def new_schedule(name: str, kind: ScheduleKind, cron: str, **fields: Any) -> Schedule:
    schedule = Schedule(name=f"{name}-{PydanticObjectId()}"[:60], kind=kind, cron=cron,
                        **fields)
    await schedule.insert()
    return schedule


async def test_crud_and_validation(client: httpx.AsyncClient, admin: Account,
                                   viewer: Account) -> None:
    body = {"name": "nightly-pg", "kind": "database", "cron": "30 1 * * 1-5",
            "timezone": "Europe/Berlin", "sources": ["pg"], "retentionDays": 14}
    created = await client.post("/api/schedules", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert {k: schedule[k] for k in body} == body
    assert schedule["enabled"] is True

    again = await client.post("/api/schedules", json=body, headers=admin.headers)
    assert again.status_code == 409
    bad_cron = await client.post("/api/schedules", json={**body, "name": "x", "cron":
                                                         "0 2 * * 8"}, headers=admin.headers)
    assert bad_cron.status_code == 422
    error = bad_cron.json()["error"]
    assert error["details"][0]["field"] == "cron"
    assert "day_of_week: 8 is outside 0-7" in error["message"]
    cases: list[tuple[dict[str, Any], str]] = [({"timezone": "Mars/Base"}, "timezone"),
                         ({"sources": ["nope"]}, "sources"),
                         ({"kind": "cleanup", "sources": ["pg"]}, "sources"),
                         ({"retentionDays": 0}, "retentionDays"),
                         ({"name": "Has Spaces"}, "name"),
                         ({"colour": "red"}, "colour")]
    for wrong, field in cases:
        answer = await client.post("/api/schedules", json={**body, "name": "y", **wrong},
                                   headers=admin.headers)
        assert answer.status_code == 422, (wrong, answer.text)
        assert answer.json()["error"]["details"][0]["field"] == field, answer.text

    path = f"/api/schedules/{schedule['id']}"
    patched = await client.patch(path, json={"cron": "0 3 * * 0", "enabled": False},
                                 headers=admin.headers)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["cron"], patched.json()["enabled"]) == ("0 3 * * 0", False)
    assert patched.json()["updatedAt"] > schedule["updatedAt"]
    assert (await client.patch(path, json={"cron": "* *"}, headers=admin.headers)
            ).status_code == 422
    assert (await client.patch(path, json={"enabled": True}, headers=viewer.headers)
            ).status_code == 403
    listed = await client.get("/api/schedules", headers=viewer.headers)
    assert schedule["id"] in [s["id"] for s in listed.json()]
    assert (await client.delete(path, headers=admin.headers)).status_code == 200
    assert (await client.get(path, headers=viewer.headers)).status_code == 404


DEFAULTS = ["daily", "weekly", "monthly", "cleanup", "stats-report", "health-check",
            "restore-drill", "reverify", "pitr-basebackup"]


@pytest.fixture
async def defaults_removed_after() -> AsyncIterator[None]:
    """The seeded defaults go when the test ends (the marker stays, so they are not seeded
    again): left in the shared catalog, a later test's catch-up would fire them."""
    yield
    await Schedule.find({"name": {"$in": DEFAULTS}}).delete()


@pytest.mark.usefixtures("defaults_removed_after")
async def test_defaults_are_seeded_once(settings: Settings) -> None:
    await Schedule.find({"name": {"$in": DEFAULTS}}).delete()
    await Schedule.get_pymongo_collection().database["service_markers"].delete_many({})
    counts = await asyncio.gather(*(schedules.seed_schedules(settings) for _ in range(3)))
    assert sum(counts) == len(DEFAULTS)  # three replicas at once: each default exactly once
    seeded = {s.name: s for s in await schedules.list_schedules()}
    assert (seeded["daily"].cron, seeded["daily"].retention_days) == ("0 2 * * *", 7)
    assert (seeded["weekly"].cron, seeded["weekly"].retention_days) == ("0 3 * * 0", 30)
    assert (seeded["monthly"].cron, seeded["monthly"].retention_days) == ("0 4 1 * *", 90)
    assert seeded["cleanup"].kind is ScheduleKind.cleanup
    assert seeded["stats-report"].cron == "0 5 * * 0"
    assert seeded["health-check"].cron == "0 6 1 * *"
    # The weekly default fires on Sunday (crontab's 0), not APScheduler's Monday.
    sunday = fires.next_run(seeded["weekly"], datetime(2026, 11, 23, tzinfo=UTC))
    assert sunday == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)

    await seeded["daily"].delete()
    assert await schedules.seed_schedules(settings) == 0  # a deleted default stays deleted
    assert await Schedule.find({"name": "daily"}).count() == 0


@pytest.mark.usefixtures("defaults_removed_after")
async def test_a_default_added_by_an_upgrade_is_seeded_on_an_existing_catalog(
        settings: Settings) -> None:
    # A catalog seeded by a version whose marker had no list, one default deleted since.
    markers = Schedule.get_pymongo_collection().database["service_markers"]
    await Schedule.find({"name": {"$in": DEFAULTS}}).delete()
    await markers.delete_many({})
    await markers.insert_one({"_id": schedules.SEEDED_MARKER})
    added = [d for d in DEFAULTS if d not in schedules.LEGACY_SEEDED]
    assert await schedules.seed_schedules(settings) == len(added)
    names = {s.name for s in await schedules.list_schedules()}
    assert set(added) <= names
    assert not names & set(schedules.LEGACY_SEEDED)  # deleted ones stay deleted
    assert await schedules.seed_schedules(settings) == 0


async def test_a_fire_runs_once_across_replicas(settings: Settings) -> None:
    schedule = await new_schedule("once", ScheduleKind.database, "0 * * * *",
                                  sources=["pg", "mongo"])
    replicas = [service(settings, f"replica-{i}") for i in range(3)]
    fire_time = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert schedule.id is not None
    await asyncio.gather(*(r._fire(schedule.id, run_times=[fire_time]) for r in replicas))
    fires = await ScheduleFire.find({"scheduleId": schedule.id}).to_list()
    assert len(fires) == 1
    assert fires[0].status is FireStatus.dispatched
    jobs = await BackupJob.find({"fireId": fires[0].id}).to_list()
    assert sorted(j.source or "" for j in jobs) == ["mongo", "pg"]
    assert {j.kind for j in jobs} == {JobKind.database}
    assert all(j.params["request"]["retentionDays"] is None for j in jobs)
    assert all(j.params["backupType"] == "automatic" for j in jobs)
    stored = await Schedule.get(schedule.id)
    assert stored is not None
    assert stored.last_fire_at == fire_time
    for job in jobs:  # let the app's runner finish them before the next test
        await replicas[0].runner.wait(job.id, 120)  # type: ignore[arg-type]


async def test_missed_fires_coalesce_into_one_catch_up(settings: Settings) -> None:
    wall = datetime.now(UTC)
    now = wall.replace(minute=wall.minute // 10 * 10, second=0, microsecond=0)
    schedule = await new_schedule("catchup", ScheduleKind.health_check, "*/10 * * * *")
    await Schedule.get_pymongo_collection().update_one(
        {"_id": schedule.id}, {"$set": {"updatedAt": now - timedelta(hours=3),
                                        "lastFireAt": now - timedelta(hours=3)}})
    replica = service(settings, "catch-up", misfire_grace_seconds=1800)
    await asyncio.gather(replica.catch_up(now), replica.catch_up(now))  # twice: no effect
    fires = await ScheduleFire.find({"scheduleId": schedule.id}).sort("fireTime").to_list()
    assert [f.status for f in fires] == [FireStatus.missed, FireStatus.dispatched]
    missed, ran = fires
    assert ran.catch_up
    assert ran.fire_time == now
    assert missed.missed_count == 17  # 18 fires in 3 hours, the newest ran
    assert missed.missed_from == now - timedelta(hours=3) + timedelta(minutes=10)
    assert len(await BackupJob.find({"fireId": ran.id}).to_list()) == 1

    # Down for longer than the grace period: nothing runs, all are recorded as missed.
    late = await new_schedule("toolate", ScheduleKind.health_check, "0 * * * *")
    # In the past: a future time would also fire the catalog's other schedules due before it
    # (the seeded 04:30 re-verification, when the suite runs between 04:00 and 04:30).
    check_at = now.replace(minute=30) - timedelta(hours=1)
    await Schedule.get_pymongo_collection().update_one(
        {"_id": late.id}, {"$set": {"updatedAt": check_at - timedelta(hours=5, minutes=30)}})
    strict = service(settings, "catch-up-strict", misfire_grace_seconds=60)
    await strict.catch_up(check_at)  # five hourly fires since, the newest 30 min ago
    late_fires = await ScheduleFire.find({"scheduleId": late.id}).to_list()
    assert [(f.status, f.missed_count) for f in late_fires] == [(FireStatus.missed, 5)]


async def test_live_fires_edits_and_status(client: httpx.AsyncClient, admin: Account,
                                           viewer: Account, settings: Settings) -> None:
    replica = service(settings, "live", reload_seconds=0.5)
    created = await client.post("/api/schedules", json={
        "name": "every-two-seconds", "kind": "health_check", "cron": "*/2 * * * * *"},
        headers=admin.headers)
    schedule_id = PydanticObjectId(created.json()["id"])
    await replica.start()
    try:
        await asyncio.sleep(5)
        fires = await ScheduleFire.find({"scheduleId": schedule_id}).to_list()
        assert 2 <= len(fires) <= 3
        times = sorted(f.fire_time for f in fires)
        assert all(t.second % 2 == 0 for t in times)

        # An edit applies without a restart.
        await client.patch(f"/api/schedules/{schedule_id}", json={"enabled": False},
                           headers=admin.headers)
        await asyncio.sleep(1)
        count = await ScheduleFire.find({"scheduleId": schedule_id}).count()
        await asyncio.sleep(3)
        assert await ScheduleFire.find({"scheduleId": schedule_id}).count() == count
    finally:
        await replica.stop()

    last_jobs = await BackupJob.find({"scheduleId": schedule_id}).to_list()
    for job in last_jobs:
        await replica.runner.wait(job.id, 60)  # type: ignore[arg-type]
    status = await client.get("/api/backups/schedule/status", headers=viewer.headers)
    assert status.status_code == 200
    mine = next(s for s in status.json() if s["id"] == str(schedule_id))
    assert mine["nextRun"] is None  # disabled
    assert mine["lastRun"]["status"] == "dispatched"
    assert mine["lastRun"]["outcome"] == JobStatus.completed.value
    assert mine["lastRun"]["jobs"][0]["status"] == "completed"
    await client.patch(f"/api/schedules/{schedule_id}", json={"enabled": True},
                       headers=admin.headers)
    asked_at = utcnow()  # nextRun is at most two seconds on: compare with the request's time
    status = await client.get("/api/backups/schedule/status", headers=viewer.headers)
    mine = next(s for s in status.json() if s["id"] == str(schedule_id))
    assert datetime.fromisoformat(mine["nextRun"]) > asked_at


async def test_content_schedules_queue_content_jobs(client: httpx.AsyncClient, admin: Account,
                                                    settings: Settings) -> None:
    body = {"name": "nightly-content", "kind": "content", "cron": "0 1 * * *",
            "sources": ["ipfs-files"], "retentionDays": 60}
    created = await client.post("/api/schedules", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    wrong = await client.post("/api/schedules", json={**body, "name": "bad", "sources": ["pg"]},
                              headers=admin.headers)
    assert wrong.status_code == 422
    assert "Unknown source(s): pg" in wrong.json()["error"]["message"]
    schedule = await Schedule.get(PydanticObjectId(created.json()["id"]))
    assert schedule is not None
    replica = service(settings, "content-fires")
    await replica._fire(PydanticObjectId(created.json()["id"]),
                        run_times=[datetime(2026, 11, 23, 1, tzinfo=UTC)])
    jobs = await BackupJob.find({"scheduleId": schedule.id}).to_list()
    assert [(j.kind, j.source) for j in jobs] == [(JobKind.content, "ipfs-files")]
    assert jobs[0].params["request"]["retentionDays"] == 60
    assert jobs[0].id is not None
    await replica.runner.wait(jobs[0].id, 60)


async def test_a_scheduled_cleanup_runs_and_prunes(settings: Settings) -> None:
    # Its params carry the fire time, which the cleanup request once refused: every
    # scheduled cleanup failed.
    schedule = await new_schedule("nightly-cleanup", ScheduleKind.cleanup, "0 5 * * *")
    replica = service(settings, "replica-cleanup")
    assert schedule.id is not None
    await replica._fire(schedule.id, run_times=[datetime(2026, 11, 22, 5, 0, tzinfo=UTC)])
    job = await BackupJob.find_one({"scheduleId": schedule.id})
    assert job is not None
    assert job.id is not None
    done = await replica.runner.wait(job.id, 120)
    assert done.status is JobStatus.completed, done.error
    assert "history" in done.result
    assert done.result["auditRecordsPruned"] >= 0


async def test_pitr_base_backup_schedules_name_pitr_sources(settings: Settings) -> None:
    body = ScheduleCreate(name=f"base-{uuid.uuid4().hex[:6]}", kind=ScheduleKind.pitr_basebackup,
                          cron="0 1 * * 0", sources=["pg"])
    with pytest.raises(InvalidInputError, match="Not PITR sources: pg"):
        await schedules.create_schedule(settings, body)
    pitr = settings.model_copy(update={"pitr": settings.pitr.model_copy(
        update={"sources": ["pg"]})})
    created = await schedules.create_schedule(pitr, body)
    try:
        # Each fire queues one base backup per PITR source, as an automatic backup.
        everyone = created.model_copy(update={"sources": []})
        assert fires.schedule_targets(pitr, everyone) == ["pg"]
        assert fires.schedule_targets(settings, everyone) == []
    finally:
        await created.delete()
