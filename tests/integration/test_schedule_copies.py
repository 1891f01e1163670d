"""A database schedule can name extra storage targets: checked on every edit, carried by
each job a fire queues, and the backups those jobs write are copied there."""

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId

from app.config import Settings
from app.errors import InvalidInputError
from app.models.backup import Backup, VerificationState
from app.models.job import BackupJob, JobStatus
from app.models.schedule import Schedule, ScheduleCreate, ScheduleUpdate
from app.scheduler import schedules
from app.scheduler.service import ScheduleService
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.runner import JobRunner
from app.services.storage import StorageTargets
from tests.support.accounts import Account
from tests.support.storage_targets import local_target, with_targets

pytestmark = pytest.mark.usefixtures("source_databases")
BODY = {"name": "copied-pg", "kind": "database", "cron": "0 2 * * *", "sources": ["pg"]}


def _fields(answer: httpx.Response) -> list[str]:
    return [d["field"] for d in answer.json()["error"]["details"]]


async def test_api_checks_copy_targets(client: httpx.AsyncClient, admin: Account) -> None:
    unknown = await client.post("/api/schedules", json={**BODY, "copyTargets": ["nowhere"]},
                                headers=admin.headers)
    assert unknown.status_code == 422, unknown.text
    assert _fields(unknown) == ["copyTargets"]
    assert "nowhere" in unknown.json()["error"]["message"]
    for kind in ("content", "cleanup"):
        wrong = await client.post("/api/schedules", json={
            "name": f"copied-{kind}", "kind": kind, "cron": "0 2 * * *",
            "copyTargets": ["local"]}, headers=admin.headers)
        assert wrong.status_code == 422, (kind, wrong.text)
        assert _fields(wrong) == ["copyTargets"]

    # The app's only target is its default: allowed, and copies skip it.
    created = await client.post("/api/schedules", json={**BODY, "copyTargets": ["local"]},
                                headers=admin.headers)
    assert created.status_code == 201, created.text
    assert created.json()["copyTargets"] == ["local"]
    path = f"/api/schedules/{created.json()['id']}"
    assert (await client.get(path, headers=admin.headers)).json()["copyTargets"] == ["local"]
    listed = await client.get("/api/schedules", headers=admin.headers)
    assert [s["copyTargets"] for s in listed.json() if s["name"] == "copied-pg"] == [["local"]]

    null = await client.patch(path, json={"copyTargets": None}, headers=admin.headers)
    assert null.status_code == 422, null.text
    assert "copyTargets" in null.text
    bad = await client.patch(path, json={"copyTargets": ["nowhere"]}, headers=admin.headers)
    assert bad.status_code == 422
    assert _fields(bad) == ["copyTargets"]
    cleared = await client.patch(path, json={"copyTargets": []}, headers=admin.headers)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["copyTargets"] == []
    await client.delete(path, headers=admin.headers)


async def test_older_schedule_without_copy_targets_loads(client: httpx.AsyncClient,
                                                         admin: Account) -> None:
    oid = PydanticObjectId()
    collection = Schedule.get_pymongo_collection()
    await collection.insert_one({"_id": oid, "name": f"old-{oid}", "kind": "database",
                                 "cron": "0 3 * * *", "timezone": "UTC", "sources": [],
                                 "retentionDays": None, "enabled": True})
    found = await schedules.find_schedule(oid)
    assert found is not None
    assert found.copy_targets == []
    shown = await client.get(f"/api/schedules/{oid}", headers=admin.headers)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["copyTargets"], shown.json()["error"]) == ([], None)
    await collection.delete_one({"_id": oid})


async def test_fired_jobs_carry_and_make_the_copies(settings: Settings) -> None:
    ours = with_targets(settings, [local_target("near"), local_target("far")], default="near")
    with pytest.raises(InvalidInputError) as refused:
        await schedules.create_schedule(ours, ScheduleCreate.model_validate(
            {**BODY, "name": "copies-unknown", "copyTargets": ["far", "gone"]}))
    assert [d["field"] for d in refused.value.details or []] == ["copyTargets"]
    assert "gone" in refused.value.message

    schedule = await schedules.create_schedule(ours, ScheduleCreate.model_validate(
        {**BODY, "name": f"copies-{PydanticObjectId()}", "copyTargets": ["near"]}))
    assert schedule.id is not None
    schedule = await schedules.update_schedule(ours, schedule.id, ScheduleUpdate.model_validate(
        {"copyTargets": ["far", "near"]}))
    assert schedule.copy_targets == ["far", "near"]
    assert schedule.id is not None

    targets = StorageTargets.from_settings(ours)
    await targets.prepare()
    # Jobs held by this runner: the app's runner (one target only) cannot claim them.
    runner = JobRunner(ours, targets.default, JOB_HANDLERS, replica_id="copies",
                       runs_own_jobs=True, targets=targets)
    await ScheduleService(runner)._fire(schedule.id,
                                        run_times=[datetime(2026, 11, 23, 2, tzinfo=UTC)])
    jobs = await BackupJob.find({"scheduleId": schedule.id}).to_list()
    assert [j.source for j in jobs] == ["pg"]
    request: dict[str, Any] = jobs[0].params["request"]
    assert request["copyTargets"] == ["far", "near"]

    done = await runner.run_now(jobs[0])
    assert done.status is JobStatus.completed, done.error
    backup = await Backup.find_one({"jobId": done.id})
    assert backup is not None
    assert backup.storage_target == "near"
    # The default target is named but skipped: the one copy is on "far".
    assert [(c.target, c.sha256, c.verification.state) for c in backup.copies] == [
        ("far", backup.sha256, VerificationState.passed)]
    assert await targets.named("far").stat(str(backup.storage_key)) is not None
