"""Issue 13 point 2: restore drills into scratch databases on the real PostgreSQL and
FerretDB, with counts against the manifest, source checks, RTO and cleanup."""

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from beanie import PydanticObjectId
from pydantic import ValidationError

from app.config import DrillSettings, Settings, public_view
from app.errors import ConflictError
from app.models.backup import Backup
from app.models.common import utcnow
from app.models.content import ContentObject
from app.models.drill import DrillResult, RestoreDrill
from app.models.job import JobKind
from app.models.job_params import checked_params
from app.models.schedule import Schedule, ScheduleFire, ScheduleKind
from app.scheduler import fires
from app.scheduler.schedules import default_schedules
from app.services.catalog.queries import update_backup
from app.services.catalog.stats import backup_health
from app.services.jobs.runner import Progress
from app.services.recoverability.drills import drill_source
from app.services.recoverability.restore_drill import scratch_name
from app.services.recoverability.scratch import drop_scratch
from app.services.storage import StorageTargets
from tests.support.accounts import Account
from tests.support.content_targets import SOURCE, add_random, back_up_cids, content_on
from tests.support.drills import PREFIX, drill, drill_settings, new_backup, scratch_databases
from tests.support.restore_safety import backup_of, flip_byte
from tests.support.settings import PG_URI, pg_uri
from tests.support.storage_targets import local_target

pytestmark = pytest.mark.usefixtures("source_databases")


@pytest.fixture(autouse=True)
async def _no_drills_left(app: object) -> AsyncIterator[None]:
    """Drill records feed health: none outlives its test."""
    await RestoreDrill.find_all().delete()
    yield
    await RestoreDrill.find_all().delete()


async def test_a_drill_passes_on_a_good_backup_and_drops_its_scratch_database(
        client: httpx.AsyncClient, admin: Account, viewer: Account, settings: Settings) -> None:
    made = await backup_of(client, admin, "pg")
    ran = await client.post("/api/drills", json={"source": "pg"}, headers=admin.headers,
                            params={"wait": "true"})
    assert ran.status_code == 200, ran.text
    job = ran.json()
    assert job["status"] == "completed", job
    assert job["kind"] == "restore_drill"
    listed = await client.get("/api/drills", headers=viewer.headers)
    assert listed.status_code == 200, listed.text
    (record,) = listed.json()["items"]
    assert record["result"] == "passed", record
    assert record["backupId"] == made["id"]
    assert record["failures"] == []
    assert {c["name"] for c in record["checks"]} >= {"restore", "count public.posts",
                                                    "count other.Mixed Case"}
    assert all(c["passed"] for c in record["checks"])
    phases = record["phases"]
    assert set(phases) == {"download_s", "restore_s", "checks_s"}
    assert record["rtoS"] == pytest.approx(sum(phases.values()), abs=0.01)
    assert record["scratchDatabase"].startswith(settings.drills.prefix + "pg_")
    assert record["kept"] is False
    (trend,) = listed.json()["trends"]
    assert (trend["source"], trend["lastResult"], trend["rtoS"]) == ("pg", "passed",
                                                                      [record["rtoS"]])
    # The scratch database is gone.
    conn = await asyncpg.connect(PG_URI)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1",
                                   record["scratchDatabase"]) == 0
    finally:
        await conn.close()


async def test_a_drill_fails_naming_the_table_and_both_counts(settings: Settings) -> None:
    config = drill_settings(settings, keep_failed=True)
    backup = await new_backup(config, "drillpg")
    contents = [c.model_copy(update={"count": 499}) if c.name == "public.posts" else c
                for c in backup.contents]
    await update_backup(backup, contents=contents)
    record = await drill(config, "drillpg")
    assert record.result is DrillResult.failed
    assert "count public.posts: table public.posts: 500 restored, 499 in the manifest" \
        in record.failures
    assert [c.name for c in record.checks if not c.passed] == ["count public.posts"]
    # Kept for a look (keep_failed), and health names it.
    assert record.kept is True
    assert record.scratch_database in await scratch_databases("postgres")
    health = await backup_health(config)
    assert health.status.value in ("warning", "critical")
    assert any(i.startswith("drillpg: the last restore drill failed: count public.posts")
               for i in health.issues), health.issues
    # The source's own entry says so too (the console's banner per source reads it).
    (entry,) = [s for s in health.sources if s.source == "drillpg"]
    assert entry.status.value in ("warning", "critical")
    assert any("restore drill failed" in i for i in entry.issues), entry.issues
    assert record.scratch_database is not None
    await drop_scratch(config, config.sources[-2], record.scratch_database)
    assert record.scratch_database not in await scratch_databases("postgres")


async def test_a_drill_fails_when_a_source_check_fails_and_drops_its_scratch(
        settings: Settings) -> None:
    checks = [{"name": "people", "collection": "people", "minimum": 50},
              {"name": "recent items", "collection": "items", "time_field": "date",
               "within_days": 2}]
    config = drill_settings(settings, sources=[{"source": "drillmongo", "checks": checks}])
    await new_backup(config, "drillmongo")
    record = await drill(config, "drillmongo")
    assert record.result is DrillResult.failed
    outcome = {c.name: (c.passed, c.detail) for c in record.checks}
    assert outcome["check people"] == (True, "50 (expected at least 50)")
    assert outcome["check recent items"] == (False, "0 (expected at least 1)")
    assert outcome["count items"][0]
    assert outcome["count people"][0]
    assert record.failures == ["check recent items: 0 (expected at least 1)"]
    # keep_failed is off: the failed drill's scratch database is dropped too.
    assert record.kept is False
    assert await scratch_databases("mongodb") == []


async def test_sql_checks_see_the_backup_time_and_rto_targets_are_judged(
        settings: Settings) -> None:
    recent = ("SELECT count(*) FROM posts "
              "WHERE created BETWEEN $1::timestamptz - interval '2 days' AND $1")
    config = drill_settings(settings, rto_target_seconds=0.001, sources=[
        {"source": "drillpg", "checks": [{"name": "recent posts", "sql": recent,
                                          "minimum": 500}]}])
    await new_backup(config, "drillpg")
    record = await drill(config, "drillpg")
    assert record.result is DrillResult.passed, record.failures
    assert ("check recent posts", True) in [(c.name, c.passed) for c in record.checks]
    assert record.over_target is True
    assert record.rto_target_s == 0.001
    health = await backup_health(config)
    assert any(i.startswith("drillpg: the last restore drill took") and "over its RTO "
               "target of 0.001 s" in i for i in health.issues), health.issues
    assert await scratch_databases("postgres") == []
    # A check whose query fails is a failed check, not a failed service.
    broken = drill_settings(settings, sources=[
        {"source": "drillpg", "checks": [{"name": "bad", "sql": "SELECT count(*) FROM nope"}]}])
    failed = await drill(broken, "drillpg")
    assert failed.result is DrillResult.failed
    assert failed.failures[0].startswith("check bad: ")
    assert "nope" in failed.failures[0]


async def test_a_source_without_a_backup_fails_its_drill(settings: Settings) -> None:
    config = drill_settings(settings)
    await Backup.find({"source": "drillmongo"}).delete()
    record = await drill(config, "drillmongo")
    assert record.result is DrillResult.failed
    assert record.failures == ["no good backup of this source to restore"]
    assert record.rto_s is None


def test_scratch_names_always_carry_the_prefix(settings: Settings) -> None:
    with pytest.raises(ValidationError):
        DrillSettings(prefix="")
    with pytest.raises(ValidationError):
        DrillSettings(prefix="x; DROP")
    with pytest.raises(ConflictError):
        scratch_name("", "pg")
    name = scratch_name(PREFIX, "My-Source")
    assert name.startswith(PREFIX + "my_source_")
    assert len(name) <= 63
    long = scratch_name(PREFIX, "s" * 63)
    assert long.startswith(PREFIX)
    assert len(long) <= 63


async def test_drop_refuses_a_database_without_the_prefix(settings: Settings) -> None:
    config = drill_settings(settings)
    with pytest.raises(ValueError, match="not a drill scratch database"):
        await drop_scratch(config, config.sources[0], config.sources[0].database_name())


async def test_drill_endpoints_check_roles_and_input(client: httpx.AsyncClient,
                                                     admin: Account, viewer: Account) -> None:
    assert (await client.post("/api/drills", json={}, headers=viewer.headers)
            ).status_code == 403
    unknown = await client.post("/api/drills", json={"source": "nope"}, headers=admin.headers)
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["error"]["details"][0]["field"] == "source"
    extra = await client.post("/api/drills", json={"sourc": "pg"}, headers=admin.headers)
    assert extra.status_code == 422
    assert (await client.get("/api/drills", params={"limit": 0},
                             headers=viewer.headers)).status_code == 422
    assert (await client.get("/api/drills")).status_code == 401


def test_the_drill_and_reverify_schedules_are_built_in(settings: Settings) -> None:
    built_in = {s.name: s for s in default_schedules(settings)}
    assert built_in["restore-drill"].cron == settings.drills.schedule == "0 4 * * 6"
    assert built_in["restore-drill"].kind.value == "restore_drill"
    assert built_in["reverify"].kind.value == "reverify"


async def test_a_content_drill_rehashes_and_decodes_a_sample(settings: Settings,
                                                             app: object) -> None:
    cid = await add_random(200_000)
    disk = local_target("disk")
    config = content_on(settings, [disk], "disk", [cid])
    await back_up_cids(config)
    targets = StorageTargets.from_settings(config)
    record = await drill_source(config, targets, SOURCE, None, Progress())
    assert record.result is DrillResult.passed, record.failures
    assert record.mode == "content"
    assert [(c.name, c.passed) for c in record.checks] == [(f"object ipfs:{cid}", True),
                                                           ("sample", True)]
    assert record.rto_s is not None
    # The same object damaged on storage (same size): the next drill fails naming it.
    obj = await ContentObject.get(f"ipfs:{cid}")
    assert obj is not None
    flip_byte(Path(disk["local_dir"]) / obj.storage_key)
    damaged = await drill_source(config, targets, SOURCE, None, Progress())
    assert damaged.result is DrillResult.failed
    assert damaged.failures[0].startswith(f"object ipfs:{cid}: ")


async def test_drill_schedules_name_their_sources_and_queue_drill_jobs(
        client: httpx.AsyncClient, admin: Account, settings: Settings) -> None:
    body = {"name": f"drill-pg-{PREFIX}", "kind": "restore_drill", "cron": "0 3 * * 0",
            "sources": ["pg"]}
    created = await client.post("/api/schedules", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    for bad, field in (({"sources": ["nope"]}, "sources"), ({"retentionDays": 3},
                                                             "retentionDays")):
        refused = await client.post("/api/schedules", json={**body, "name": "x", **bad},
                                    headers=admin.headers)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == field
    schedule = await Schedule.get(PydanticObjectId(created.json()["id"]))
    assert schedule is not None
    fire = ScheduleFire(schedule_id=schedule.id, schedule_name=schedule.name,
                        fire_time=utcnow())
    # One drill job per named source, or one of every source when none is named.
    assert fires.schedule_targets(settings, schedule) == ["pg"]
    params = fires.fire_params(schedule, "pg", fire)
    assert checked_params(JobKind.restore_drill, params) == {
        "source": "pg", "fireTime": params.model_dump(mode="json")["fire_time"]}
    every = schedule.model_copy(update={"sources": []})
    assert fires.schedule_targets(settings, every) == [None]
    rolling = schedule.model_copy(update={"kind": ScheduleKind.reverify, "sources": []})
    assert set(checked_params(JobKind.reverify, fires.fire_params(rolling, None, fire))) == {
        "fireTime"}
    assert (await client.delete(f"/api/schedules/{schedule.id}",
                                headers=admin.headers)).status_code == 200


async def test_a_drill_left_running_by_a_stopped_service_is_settled(settings: Settings) -> None:
    config = drill_settings(settings)
    name = scratch_name(PREFIX, "drillpg")
    conn = await asyncpg.connect(PG_URI)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    stale = RestoreDrill(source="drillpg", scratch_database=name)
    await stale.insert()
    await new_backup(config, "drillpg")
    fresh = await drill(config, "drillpg")
    assert fresh.result is DrillResult.passed, fresh.failures
    settled = await RestoreDrill.get(stale.id)
    assert settled is not None
    assert settled.result is DrillResult.failed
    assert settled.failures == ["interrupted: the drill did not finish"]
    assert await scratch_databases("postgres") == []


async def test_a_drill_server_of_its_own_is_used_and_its_uri_kept_secret(
        settings: Settings) -> None:
    server = pg_uri("postgres")  # the same server reached through another database
    config = drill_settings(settings, sources=[{"source": "drillpg", "uri": server}])
    assert public_view(config.drills)["sources"][0]["uri"] == "<redacted>"
    await new_backup(config, "drillpg")
    record = await drill(config, "drillpg")
    assert record.result is DrillResult.passed, record.failures
    assert await scratch_databases("postgres") == []
    # The drill goes to the configured server, not the source's: an unreachable one fails.
    nowhere = drill_settings(settings, sources=[
        {"source": "drillpg", "uri": "postgresql://backvault:backvault@127.0.0.1:9/postgres"}])
    failed = await drill(nowhere, "drillpg")
    assert failed.result is DrillResult.failed
    assert "Cannot connect" in failed.failures[0], failed.failures
