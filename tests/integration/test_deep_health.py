"""Deep health: every storage target, free space, source, endpoint, the catalog and the
notification URLs probed for real; what is broken is named, and low space warns in the
normal health too."""

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Settings
from app.models.backup import Backup, BackupStatus
from app.models.job import JobKind, JobStatus
from app.models.job_params import ReportParams
from app.services.access.auth import system_user_id
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.runner import JobRunner
from app.services.ops.notify import job_listener
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.rebuild import drop_catalog, own_settings, run_backvault, started
from tests.support.receivers import HttpReceiver, free_port
from tests.support.settings import IPFS_API, WORK
from tests.support.sftp import sftp_target
from tests.support.storage_targets import local_target, s3_target

PB = 10**15
pytestmark = pytest.mark.usefixtures("source_databases")


def by_name(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["area"], c["name"]): c for c in report["deep"]["checks"]}


async def test_deep_health_probes_everything(client: httpx.AsyncClient, admin: Account,
                                             viewer: Account, settings: Settings) -> None:
    answer = await client.get("/api/backups/health?deep=true", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    checks = by_name(report)
    for name in settings.storage.target_names():
        assert checks[("storage", name)]["status"] == "ok", checks[("storage", name)]
        assert checks[("storage", name)]["latencyMs"] > 0
    pg = checks[("source", "pg")]
    assert pg["status"] == "ok", pg
    assert pg["facts"]["serverVersion"].startswith("15")
    assert "pg_dump" in pg["facts"]["toolVersion"]
    assert checks[("source", "mongo")]["status"] == "ok"
    assert checks[("catalog", "write")]["status"] == "ok"
    kubo = checks[("kubo", IPFS_API)]
    assert kubo["status"] == "ok"
    assert kubo["facts"]["version"]
    assert all(c["status"] == "ok" for (area, _), c in checks.items() if area == "ipfs")
    spool = checks[("space", "restore spool")]
    assert spool["facts"]["freeBytes"] > 0
    # The probe objects are gone again.
    files = await client.get("/api/backups/files?prefix=doctor-probe/", headers=admin.headers)
    assert files.json() == []

    refused = await client.get("/api/backups/health?deep=true", headers=viewer.headers)
    assert refused.status_code == 403
    plain = await client.get("/api/backups/health", headers=viewer.headers)
    assert plain.status_code == 200
    assert "deep" not in plain.json()
    bad = await client.get("/api/backups/health?deep=maybe", headers=admin.headers)
    assert bad.status_code == 422


def old_pg_dump(directory: Path) -> Path:
    """A pg_dump that says it is version 9.6 (what an old client package installs)."""
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / "pg_dump"
    tool.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return directory


async def test_what_is_broken_is_named(app: FastAPI, settings: Settings) -> None:
    dead_hub = f"http://127.0.0.1:{free_port()}"
    broken_s3 = {**s3_target("broken"), "s3_secret_key": "wrong-secret-for-doctor"}
    dead_box = sftp_target("deadbox", endpoint=f"http://127.0.0.1:{free_port()}")
    own = own_settings(
        settings, [],
        content={"gaia_hubs": [dead_hub]},
        tools={"pg_bin_dir": old_pg_dump(WORK / "old-pg-bin")},
        notifications={"urls": [SecretStr("json://127.0.0.1:9/hook"),
                                SecretStr("nosuchscheme://user:hunter2@host")]},
        storage={"targets": [local_target("main"), broken_s3, sftp_target("box"), dead_box],
                 "default_target": "main"})
    async with started(app, settings, own) as (client, headers):
        # A recent backup far bigger than any disk: every free space is too low for it.
        await Backup(admin=await system_user_id(), status=BackupStatus.completed,
                     source="pg", kind="postgres", stored_bytes=PB,
                     plaintext_bytes=PB).insert()
        plain = (await client.get("/api/backups/health", headers=headers)).json()
        assert plain["status"] in ("warning", "critical")
        assert any(i.startswith("space target main: low free space") for i in plain["issues"])
        assert any(i.startswith("space restore spool: low free space")
                   for i in plain["issues"])

        answer = await client.get("/api/backups/health?deep=true", headers=headers)
        assert answer.status_code == 200, answer.text
        report = answer.json()
        checks = by_name(report)
        assert report["status"] == "critical"
        assert report["deep"]["status"] == "failed"
        assert checks[("storage", "main")]["status"] == "ok"
        assert checks[("storage", "broken")]["status"] == "failed"
        pg = checks[("source", "pg")]
        assert pg["status"] == "failed"
        assert "pg_dump 9 is older than the server's major 15" in pg["detail"]
        assert checks[("gaia", dead_hub)]["status"] == "failed"
        assert checks[("space", "target main")]["status"] == "warning"
        # An SFTP target says how much room it has (statvfs@openssh.com); one that cannot
        # be reached fails the check, naming it.
        box = checks[("space", "target box")]
        assert box["status"] == "warning", box
        assert box["facts"]["path"].startswith("sftp://")
        assert 0 < box["facts"]["freeBytes"] < PB
        dead = checks[("space", "target deadbox")]
        assert dead["status"] == "failed"
        assert dead["detail"].startswith("Cannot read the free space of sftp://"), dead
        assert dead["detail"].count("sftp://") == 1
        assert ("space", "target broken") not in checks  # an object store has no free space
        notes = [c for (area, _), c in checks.items() if area == "notifications"]
        assert [c["status"] for c in notes] == ["ok", "failed"]
        assert any(i.startswith(f"gaia {dead_hub}:") for i in report["issues"])
        assert "hunter2" not in answer.text
        assert "wrong-secret-for-doctor" not in answer.text
    await drop_catalog(own)


async def test_health_check_job_runs_the_deep_checks_and_notifies(settings: Settings
                                                                  ) -> None:
    dead_hub = f"http://127.0.0.1:{free_port()}"
    with HttpReceiver() as hook:
        changed = settings.model_copy(update={
            "content": settings.content.model_copy(update={"gaia_hubs": [dead_hub]}),
            "notifications": settings.notifications.model_copy(update={
                "urls": [SecretStr(hook.url())], "timeout_seconds": 10})})
        runner = JobRunner(changed, LocalStorage(changed.storage.local_dir), JOB_HANDLERS,
                           replica_id="doctor-test", runs_own_jobs=True)
        runner.finish_listeners.append(job_listener(changed))
        job = await runner.submit(JobKind.health_check, ReportParams())
        done = await runner.run_now(job)
        assert done.status is JobStatus.completed, done.error
        assert done.result["status"] == "critical"
        assert {c["area"] for c in done.result["deep"]["checks"]} >= {
            "storage", "source", "catalog", "space", "gaia", "kubo"}
        for _ in range(400):
            if hook.bodies:
                break
            await asyncio.sleep(0.05)
        assert hook.bodies, "no notification reached the webhook within 20 s"
        assert hook.bodies[0]["title"] == "Backvault health: critical"
        assert f"gaia {dead_hub}:" in hook.bodies[0]["message"]


async def test_doctor_command(settings: Settings) -> None:
    own = own_settings(settings, [])
    code, out, err = await run_backvault(own, "doctor", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    checks = {(c["area"], c["name"]): c for c in report["checks"]}
    assert checks[("storage", own.storage.default_name)]["status"] == "ok"
    assert checks[("catalog", "write")]["status"] == "ok"
    assert ("space", "restore spool") in checks
    await drop_catalog(own)
