"""Restore to a time: a writer's rows up to T-1s come back, and the table dropped at T."""

import asyncio
import shutil
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.models.wal import WalSegment
from tests.support.accounts import Account
from tests.support.jobs import wait_job
from tests.support.pitr import archiving, shipped, switch_wal, until
from tests.support.settings import PG_DB, RUN, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases", "own_tables_dropped")


async def _write(log: list[tuple[int, float, float]], stop: asyncio.Event) -> None:
    """One row per commit; the log keeps (n, sent, returned) on the shared clock."""
    conn = await asyncpg.connect(pg_uri(PG_DB))
    try:
        n = 0
        while not stop.is_set():
            sent = time.time()
            await conn.execute("INSERT INTO pitr_writer VALUES ($1)", n)
            log.append((n, sent, time.time()))
            n += 1
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def _chunks(data: bytes) -> AsyncGenerator[bytes]:
    yield data


def _cut(log: list[tuple[int, float, float]], moment: float) -> tuple[float, set[int]]:
    """A target time between two commits near `moment`, and the rows committed by then."""
    done = [row for row in log if row[2] <= moment]
    last = done[-1]
    following = next(row for row in log if row[0] == last[0] + 1)
    target = (last[2] + following[1]) / 2
    return target, {row[0] for row in log if row[2] <= target}


async def test_restore_to_a_second_before_a_drop(app: FastAPI, settings: Settings,
                                                 client: httpx.AsyncClient,
                                                 admin: Account, superadmin: Account) -> None:
    conn = await asyncpg.connect(pg_uri(PG_DB))
    await conn.execute("DROP TABLE IF EXISTS pitr_writer; DROP TABLE IF EXISTS pitr_dropme; "
                       "CREATE TABLE pitr_writer (n int primary key); "
                       "CREATE TABLE pitr_dropme AS SELECT g AS id FROM generate_series(1, 50) g")
    target_db = f"bv_pitr_{RUN}"
    async with archiving(app, settings):
        job = (await client.post("/api/pitr/pg/basebackup", headers=admin.headers)).json()
        base = await wait_job(client, admin.headers, job["id"], timeout=240)
        assert base["status"] == "completed", base
        log: list[tuple[int, float, float]] = []
        stop = asyncio.Event()
        writer = asyncio.create_task(_write(log, stop))
        await asyncio.sleep(3)
        dropped_at = time.time()
        await conn.execute("DROP TABLE pitr_dropme")
        await asyncio.sleep(1)
        stop.set()
        await writer
        last = await switch_wal()
        await until(lambda: shipped(last), 30)

        target, expected = _cut(log, dropped_at - 1)
        when = datetime.fromtimestamp(target, UTC)
        body = {"targetTime": when.isoformat(), "mode": "copy", "targetDatabase": target_db}
        plan = await client.post("/api/pitr/pg/restore", headers=superadmin.headers,
                                 json={**body, "dryRun": True})
        assert plan.status_code == 200, plan.text
        assert plan.json()["baseBackupId"] == base["backupId"]
        assert plan.json()["walSegments"] >= 1
        assert (await client.post("/api/pitr/pg/restore", headers=admin.headers,
                                  json=body)).status_code == 403
        early = {**body, "targetTime": (when - timedelta(days=1)).isoformat()}
        assert (await client.post("/api/pitr/pg/restore", headers=superadmin.headers,
                                  json=early)).status_code == 422

        job = (await client.post("/api/pitr/pg/restore", headers=superadmin.headers,
                                 json={**body, "dryRun": False})).json()
        done = await wait_job(client, superadmin.headers, job["id"], timeout=300)
        assert done["status"] == "completed", done
    await conn.close()
    restored = await asyncpg.connect(pg_uri(target_db))
    try:
        rows = {r["n"] for r in await restored.fetch("SELECT n FROM pitr_writer")}
        assert rows == expected
        assert len(expected) > 10
        assert max(expected) < max(n for n, _, _ in log)
        assert await restored.fetchval("SELECT count(*) FROM pitr_dropme") == 50
    finally:
        await restored.close()


async def test_restore_latest_left_running_for_inspection(
        app: FastAPI, settings: Settings, client: httpx.AsyncClient, admin: Account,
        superadmin: Account) -> None:
    conn = await asyncpg.connect(pg_uri(PG_DB))
    await conn.execute("DROP TABLE IF EXISTS pitr_inspect; CREATE TABLE pitr_inspect (n int)")
    async with archiving(app, settings) as archivers:
        job = (await client.post("/api/pitr/pg/basebackup", headers=admin.headers)).json()
        base = await wait_job(client, admin.headers, job["id"], timeout=240)
        assert base["status"] == "completed", base
        await conn.execute("INSERT INTO pitr_inspect SELECT generate_series(1, 321)")
        last = await switch_wal()
        await until(lambda: shipped(last), 30)
        job = (await client.post("/api/pitr/pg/restore", headers=superadmin.headers,
                                 json={"latest": True, "dryRun": False})).json()
        done = await wait_job(client, superadmin.headers, job["id"], timeout=300)
        # A WAL file damaged in storage fails the restore: recovery must not end early
        # and promote at an older moment while the WAL is fetched beside it.
        damaged = await WalSegment.get(f"pg:{last}")
        assert damaged is not None
        await archivers.archivers["pg"].targets.named(damaged.storage_target).put(
            damaged.key, _chunks(b"not what was archived"))
        job = (await client.post("/api/pitr/pg/restore", headers=superadmin.headers,
                                 json={"latest": True, "dryRun": False})).json()
        failed = await wait_job(client, superadmin.headers, job["id"], timeout=120)
    await conn.close()
    assert failed["status"] == "failed", failed
    assert last in failed["error"]
    assert not any(p.name.endswith(job["id"]) for p in settings.pitr.restore_dir.iterdir())
    assert done["status"] == "completed", done
    result = done["result"]
    try:
        private = await asyncpg.connect(
            pg_uri(PG_DB).replace(":55432/", f":{result['port']}/"))
        assert await private.fetchval("SELECT count(*) FROM pitr_inspect") == 321
        assert not await private.fetchval("SELECT pg_is_in_recovery()")
        await private.close()
    finally:
        proc = await asyncio.create_subprocess_exec(*result["stopCommand"].split(),
                                                    stdout=asyncio.subprocess.DEVNULL)
        assert await proc.wait() == 0
        shutil.rmtree(Path(result["dataDir"]).parent, ignore_errors=True)
