"""Issue 14 item 6: the scheduled restore drills cover PITR sources (every WAL object and
the newest base backup re-hashed, then a restore to the latest time), recorded as drills of
mode "pitr"; a passing drill of one mode never hides a failed one of the other."""

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI

from app.config import Settings
from app.models.common import utcnow
from app.models.drill import DrillResult, RestoreDrill
from app.models.wal import WalSegment
from app.services.artifacts.stages import collect, from_bytes
from app.services.catalog.stats import backup_health
from app.services.ops.metrics import collect as collect_metrics
from app.services.recoverability.drills import list_drills
from app.services.recoverability.health import drill_issues
from tests.support.accounts import Account
from tests.support.jobs import wait_job
from tests.support.pitr import archiving, pitr_settings, shipped, switch_wal, until

pytestmark = pytest.mark.usefixtures("source_databases", "empty_catalog")


@pytest.fixture
async def pitr_runner(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """The job runner sees `pg` as a PITR source; drill and WAL records go after the test."""
    runner = app.state.runner
    await RestoreDrill.find_all().delete()
    runner.settings = pitr_settings(settings)
    yield
    runner.settings = settings
    await RestoreDrill.find_all().delete()
    await WalSegment.find({"source": "pg"}).delete()


async def _drill_job(client: httpx.AsyncClient, admin: Account,
                     body: dict[str, str] | None) -> dict[str, object]:
    ran = await client.post("/api/drills", json=body, headers=admin.headers)
    assert ran.status_code == 202, ran.text
    return await wait_job(client, admin.headers, ran.json()["id"], timeout=240)


@pytest.mark.usefixtures("pitr_runner")
async def test_a_drill_job_restores_a_pitr_source_and_fails_on_a_damaged_wal_file(
        app: FastAPI, client: httpx.AsyncClient, admin: Account, viewer: Account) -> None:
    async with archiving(app, app.state.runner.settings):
        job = (await client.post("/api/pitr/pg/basebackup", headers=admin.headers)).json()
        base = await wait_job(client, admin.headers, job["id"], timeout=240)
        assert base["status"] == "completed", base
        last = await switch_wal()
        await until(lambda: shipped(last), 30)

    # `pg` has no dump: its drill is the PITR drill alone, and it passes.
    done = await _drill_job(client, admin, {"source": "pg"})
    assert done["status"] == "completed", done
    listed = (await client.get("/api/drills", headers=viewer.headers)).json()
    (record,) = listed["items"]
    assert (record["source"], record["mode"], record["result"]) == ("pg", "pitr", "passed")
    assert record["failures"] == []
    assert set(record["phases"]) == {"wal_check_s", "restore_s"}
    assert record["phases"]["restore_s"] > 0
    assert record["rtoS"] == pytest.approx(sum(record["phases"].values()), abs=0.01)
    assert [(c["name"], c["passed"]) for c in record["checks"]] == [("wal_check", True),
                                                                      ("restore", True)]
    assert record["backupId"] == base["result"]["backupId"]
    (trend,) = listed["trends"]
    assert (trend["source"], trend["mode"], trend["lastResult"]) == ("pg", "pitr", "passed")
    # The restore's work folder is gone.
    restore_dir = app.state.runner.settings.pitr.restore_dir
    assert not any(p.name.endswith(record["id"]) for p in restore_dir.glob("pg-drill-*"))

    # One stored WAL object changes: a drill of every source (pg still has no dump) fails
    # naming the file, and so does the job.
    segment = await WalSegment.get(f"pg:{last}")
    assert segment is not None
    storage = app.state.runner.targets.named(segment.storage_target)
    stored = await collect(storage.get(segment.key))
    await storage.put(segment.key, from_bytes(stored[:-1] + bytes([stored[-1] ^ 1])))
    failed = await _drill_job(client, admin, None)
    assert failed["status"] == "failed", failed
    assert f"pg (pitr): WAL {last}" in str(failed["error"])
    drills = [d for d in await RestoreDrill.find({"source": "pg"}).to_list()
              if str(d.job_id) == failed["id"]]
    (bad,) = drills
    assert (bad.mode, bad.result) == ("pitr", DrillResult.failed)
    assert f"WAL {last}" in bad.failures
    assert set(bad.phases) == {"wal_check_s"}
    assert bad.rto_s is None
    issues = await drill_issues(["pg"])
    assert issues["pg"].startswith(f"the last PITR drill failed: WAL {last}")


async def test_a_newer_passing_pitr_drill_does_not_hide_a_failed_dump_drill(
        app: FastAPI, settings: Settings) -> None:
    await RestoreDrill.find_all().delete()
    try:
        now = utcnow()
        await RestoreDrill(source="pg", mode="database", result=DrillResult.failed,
                           failures=["count public.posts: 1 restored, 2 in the manifest"],
                           started_at=now - timedelta(hours=2), finished_at=now).insert()
        await RestoreDrill(source="pg", mode="pitr", result=DrillResult.passed, rto_s=3.0,
                           phases={"wal_check_s": 1.0, "restore_s": 2.0},
                           started_at=now - timedelta(hours=1), finished_at=now).insert()
        health = await backup_health(settings)
        (entry,) = [s for s in health.sources if s.source == "pg"]
        assert entry.status.value in ("warning", "critical")
        assert "the last restore drill failed: count public.posts: 1 restored, 2 in the " \
            "manifest" in entry.issues, entry.issues
        series = {s.name: s for s in await collect_metrics(settings, app.state.runner.targets)}
        assert (["pg"], 0.0) in series["backvault_drill_last_passed"].samples
        trends = {(t.mode, t.last_result) for t in (await list_drills(settings, "pg", 10)).trends
                  if t.source == "pg"}
        assert trends == {("database", DrillResult.failed), ("pitr", DrillResult.passed)}

        # The reverse: a newer passing dump drill does not hide a failed PITR drill.
        await RestoreDrill(source="pg", mode="pitr", result=DrillResult.failed,
                           failures=["restore: the instance did not promote"],
                           started_at=now - timedelta(minutes=30), finished_at=now).insert()
        await RestoreDrill(source="pg", mode="database", result=DrillResult.passed,
                           started_at=now - timedelta(minutes=10), finished_at=now).insert()
        assert (await drill_issues(["pg"]))["pg"] == \
            "the last PITR drill failed: restore: the instance did not promote"
        # Both modes passing: no issue.
        await RestoreDrill(source="pg", mode="pitr", result=DrillResult.passed,
                           started_at=now - timedelta(minutes=5), finished_at=now).insert()
        assert "pg" not in await drill_issues(["pg"])
        # A mode the newest drill job did not run no longer applies (the source left
        # pitr.sources): its failure stops counting.
        await RestoreDrill(source="pg", mode="pitr", result=DrillResult.failed,
                           job_id=PydanticObjectId(), failures=["restore: gone"],
                           started_at=now - timedelta(minutes=3), finished_at=now).insert()
        assert "pg" in await drill_issues(["pg"])
        await RestoreDrill(source="pg", mode="database", result=DrillResult.passed,
                           job_id=PydanticObjectId(), started_at=now - timedelta(minutes=1),
                           finished_at=now).insert()
        assert "pg" not in await drill_issues(["pg"])
    finally:
        await RestoreDrill.find_all().delete()
