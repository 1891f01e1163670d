"""No schedule can stop the scheduler: what cannot run is refused when saved, and a bad
stored schedule is reported on itself while start-up and every other schedule go on."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId
from bson import ObjectId
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from app.models.job import BackupJob
from app.models.schedule import ScheduleFire
from tests.support.accounts import Account
from tests.support.jobs import wait_job
from tests.support.schedule_safety import catalog_of, started
from tests.support.settings import make_settings

UNRUNNABLE = [
    "*/60 * * * *",                       # APScheduler refuses a step beyond the range
    "0-59/99999999999999999999 * * * *",
    "0 */24 * * *",
    "0 0 31 2 *",                         # never fires
    "0 0 30 2 *",
    "0 0 31 4,6,9,11 *",
    "\u0663 * * * *",                     # Arabic-Indic three: a digit to str.isdigit()
    "\u00b2 * * * *",                     # superscript two, likewise
    "0 " * 60 + "*",                      # far too long
]


def cron_error(answer: httpx.Response) -> str:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["details"][0]["field"] == "cron", error
    assert error["message"].startswith("cron: "), error
    return str(error["message"])


@pytest.mark.parametrize("cron", UNRUNNABLE)
async def test_a_cron_that_cannot_run_is_refused(client: httpx.AsyncClient, admin: Account,
                                                 cron: str) -> None:
    name = f"unrunnable-{PydanticObjectId()}"
    created = await client.post("/api/schedules", json={
        "name": name, "kind": "health_check", "cron": cron}, headers=admin.headers)
    cron_error(created)
    listed = await client.get("/api/schedules", headers=admin.headers)
    assert name not in [s["name"] for s in listed.json()]

    good = await client.post("/api/schedules", json={
        "name": name, "kind": "health_check", "cron": "0 6 * * *"}, headers=admin.headers)
    assert good.status_code == 201, good.text
    path = f"/api/schedules/{good.json()['id']}"
    try:
        cron_error(await client.patch(path, json={"cron": cron}, headers=admin.headers))
        assert (await client.get(path, headers=admin.headers)).json()["cron"] == "0 6 * * *"
    finally:
        await client.delete(path, headers=admin.headers)


async def test_errors_say_what_is_wrong(client: httpx.AsyncClient, admin: Account) -> None:
    async def message(cron: str) -> str:
        return cron_error(await client.post("/api/schedules", json={
            "name": "msg", "kind": "cleanup", "cron": cron}, headers=admin.headers))

    assert "minute: step 60 is larger than the range 0-59" in await message("*/60 * * * *")
    assert "never fires" in await message("0 0 31 2 *")
    assert "longer than 100 characters" in await message("0 " * 60 + "*")
    assert "ASCII" in await message("\u0663 * * * *")


async def test_an_ored_day_that_exists_is_accepted(client: httpx.AsyncClient,
                                                   admin: Account) -> None:
    # crontab ORs the day fields: "the 31st of February, or any Monday in February".
    created = await client.post("/api/schedules", json={
        "name": f"feb-mondays-{PydanticObjectId()}", "kind": "cleanup",
        "cron": "0 0 31 2 1"}, headers=admin.headers)
    assert created.status_code == 201, created.text
    await client.delete(f"/api/schedules/{created.json()['id']}", headers=admin.headers)


async def test_sub_minute_needs_the_setting(app: FastAPI, settings: Settings,
                                            client: httpx.AsyncClient, admin: Account) -> None:
    # The same catalog, served with the default setting (the session's app allows it).
    default = create_app(make_settings(catalog={"mongo_uri": settings.catalog.mongo_uri,
                                                "database": settings.catalog.database},
                                       schedules={}))
    assert default.state.settings.schedules.allow_sub_minute is False
    name = f"every-second-{PydanticObjectId()}"
    body: dict[str, Any] = {"name": name, "kind": "cleanup",
            "cron": "* * * * * *", "enabled": False}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=default),
                                 base_url="http://backvault.test") as strict:
        message = cron_error(await strict.post("/api/schedules", json=body,
                                               headers=admin.headers))
        assert "more than once a minute" in message
        assert "allow_sub_minute" in message
        # Once a minute at a chosen second is not sub-minute.
        once = await strict.post("/api/schedules", json={
            **body, "name": name + "-once", "cron": "30 * * * * *"},
            headers=admin.headers)
        assert once.status_code == 201, once.text
        await strict.delete(f"/api/schedules/{once.json()['id']}", headers=admin.headers)
        allowed = await client.post("/api/schedules", json=body, headers=admin.headers)
        assert allowed.status_code == 201, allowed.text
        path = f"/api/schedules/{allowed.json()['id']}"
        try:
            cron_error(await strict.patch(path, json={"cron": "*/10 * * * * *"},
                                          headers=admin.headers))
            # Stored while allowed, then served without the setting: reported, not run.
            listed = (await strict.get("/api/schedules", headers=admin.headers)).json()
            mine = next(s for s in listed if s["id"] == allowed.json()["id"])
            assert "more than once a minute" in mine["error"]
        finally:
            await client.delete(path, headers=admin.headers)


@pytest.mark.parametrize("field", ["cron", "timezone", "sources", "enabled", "description"])
async def test_patch_null_is_refused(client: httpx.AsyncClient, admin: Account,
                                     field: str) -> None:
    created = await client.post("/api/schedules", json={
        "name": f"nulls-{PydanticObjectId()}", "kind": "database", "cron": "0 1 * * *",
        "retentionDays": 9, "description": "d"}, headers=admin.headers)
    path = f"/api/schedules/{created.json()['id']}"
    before = (await client.get(path, headers=admin.headers)).json()
    try:
        answer = await client.patch(path, json={field: None}, headers=admin.headers)
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["details"][0]["field"] == field
        assert "must not be null" in error["message"]
        assert (await client.get(path, headers=admin.headers)).json() == before
    finally:
        await client.delete(path, headers=admin.headers)


async def test_patch_null_retention_clears_it(client: httpx.AsyncClient,
                                              admin: Account) -> None:
    created = await client.post("/api/schedules", json={
        "name": f"clear-{PydanticObjectId()}", "kind": "database", "cron": "0 1 * * *",
        "retentionDays": 9}, headers=admin.headers)
    path = f"/api/schedules/{created.json()['id']}"
    cleared = await client.patch(path, json={"retentionDays": None}, headers=admin.headers)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["retentionDays"] is None
    await client.delete(path, headers=admin.headers)


def stored(name: str, **fields: Any) -> dict[str, Any]:
    """A schedule document as an older version or a hand edit might have left it."""
    now = datetime.now(UTC)
    return {"_id": ObjectId(), "name": name, "kind": "health_check", "cron": "0 * * * *",
            "timezone": "UTC", "sources": [], "retentionDays": None, "enabled": True,
            "description": None, "createdAt": now, "updatedAt": now,
            "lastFireAt": now - timedelta(days=3), **fields}


BAD: dict[str, dict[str, Any]] = {
    "a-step-too-big": {"cron": "*/60 * * * *"},
    "b-huge-step": {"cron": "0-59/99999999999999999999 * * * *"},
    "c-never": {"cron": "0 0 31 2 *"},
    "d-bad-zone": {"timezone": "Mars/Base"},
    "e-no-kind": {"kind": None, "cron": 5, "createdAt": "yesterday"},
}


async def test_bad_stored_schedules_block_nothing(app: FastAPI, settings: Settings) -> None:
    fresh = make_settings(system={"environment": "test", "log_level": "warning",
                                  "enabled": True},
                          schedules={"allow_sub_minute": True, "reload_seconds": 0.5})
    good = stored("z-good", cron="*/2 * * * * *", lastFireAt=None)
    bad = {name: stored(name, **fields) for name, fields in BAD.items()}
    async with catalog_of(fresh) as catalog:
        await catalog["schedules"].insert_many([*bad.values(), good])
        # Before: "Application startup failed".
        async with started(app, settings, fresh) as (_, client, headers):
            await asyncio.sleep(3)
            fires = await ScheduleFire.find({"scheduleId": good["_id"]}).to_list()
            assert fires, "the schedule after the bad ones never fired"

            status = await client.get("/api/backups/schedule/status", headers=headers)
            assert status.status_code == 200, status.text
            by_id = {s["id"]: s for s in status.json()}
            assert by_id[str(good["_id"])]["error"] is None
            assert by_id[str(good["_id"])]["nextRun"] is not None
            assert by_id[str(good["_id"])]["lastRun"] is not None
            expected = {"a-step-too-big": "step 60", "b-huge-step": "step",
                        "c-never": "never fires", "d-bad-zone": "Mars/Base",
                        "e-no-kind": "kind"}
            for name, words in expected.items():
                mine = by_id[str(bad[name]["_id"])]
                assert words in mine["error"], mine
                assert mine["nextRun"] is None
            assert by_id[str(bad["e-no-kind"]["_id"])]["kind"] is None

            listed = await client.get("/api/schedules", headers=headers)
            assert listed.status_code == 200, listed.text
            assert {s["id"] for s in listed.json()} == set(by_id)
            one = await client.get(f"/api/schedules/{bad['a-step-too-big']['_id']}",
                                   headers=headers)
            assert one.status_code == 200
            assert "step 60" in one.json()["error"]

            # A bad one is repaired by PATCH or removed by DELETE.
            path = f"/api/schedules/{bad['a-step-too-big']['_id']}"
            wrong = await client.patch(path, json={"enabled": False}, headers=headers)
            assert wrong.status_code == 422
            assert wrong.json()["error"]["details"][0]["field"] == "cron"
            fixed = await client.patch(path, json={"cron": "*/2 * * * * *"}, headers=headers)
            assert fixed.status_code == 200, fixed.text
            assert fixed.json()["error"] is None
            gone = await client.delete(f"/api/schedules/{bad['e-no-kind']['_id']}",
                                       headers=headers)
            assert gone.status_code == 200, gone.text
            await asyncio.sleep(3)
            assert await ScheduleFire.find({"scheduleId": bad["a-step-too-big"]["_id"]}).count()

            for schedule in (good, bad["a-step-too-big"]):
                await client.patch(f"/api/schedules/{schedule['_id']}",
                                   json={"enabled": False}, headers=headers)
            for job in await BackupJob.find({}).to_list():
                assert job.id is not None
                await wait_job(client, headers, str(job.id))
