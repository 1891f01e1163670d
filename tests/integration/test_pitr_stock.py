"""A base backup and its WAL restore with stock tools from the manifest alone; wal-fetch
hands PostgreSQL the same bytes, checked."""

import asyncio
import json
import os
import pwd
import shutil
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.models.wal import WalSegment
from app.services.artifacts.stages import collect, from_bytes
from tests.support.accounts import Account
from tests.support.jobs import wait_job
from tests.support.pitr import archiving, shipped, switch_wal, until
from tests.support.settings import AGE_KEY_FILE, MONGO_URI, PG_BIN, PG_DB, RUN, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases", "own_tables_dropped")
RUN_USER = "postgres"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _sh(step: str, cwd: Path) -> None:
    """One manifest step, as the OS user that runs PostgreSQL (it refuses root)."""
    env = {"PATH": f"{PG_BIN}:/usr/bin:/bin", "HOME": str(cwd)}
    proc = await asyncio.create_subprocess_exec(
        shutil.which("runuser") or "runuser", "-u", RUN_USER, "--", "bash", "-c", step,
        cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, (step, out.decode())


async def _cli(settings: Settings, *args: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({"BACKUP_CATALOG__MONGO_URI": MONGO_URI,
                "BACKUP_CATALOG__DATABASE": settings.catalog.database,
                "BACKUP_STORAGE__LOCAL_DIR": str(settings.storage.local_dir),
                "BACKUP_ENCRYPTION__IDENTITY_FILE": str(AGE_KEY_FILE),
                "BACKUP_SYSTEM__LOG_LEVEL": "warning"})
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "backvault"), *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode


async def _promoted(port: int) -> bool:
    try:
        conn = await asyncpg.connect(pg_uri(PG_DB).replace(":55432/", f":{port}/"), timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        return not await conn.fetchval("SELECT pg_is_in_recovery()")
    finally:
        await conn.close()


async def test_stock_tools_restore_from_the_manifest(
        app: FastAPI, settings: Settings, client: httpx.AsyncClient, admin: Account,
        superadmin: Account) -> None:
    storage = app.state.runner.targets.default
    conn = await asyncpg.connect(pg_uri(PG_DB))
    await conn.execute("DROP TABLE IF EXISTS pitr_stock; CREATE TABLE pitr_stock (n int)")
    async with archiving(app, settings):
        job = (await client.post("/api/pitr/pg/basebackup", headers=admin.headers)).json()
        base = await wait_job(client, admin.headers, job["id"], timeout=240)
        assert base["status"] == "completed", base
        await conn.execute("INSERT INTO pitr_stock SELECT generate_series(1, 777)")
        last = await switch_wal()
        await until(lambda: shipped(last), 30)
    await conn.close()
    backup = (await client.get(f"/api/backups/{base['backupId']}", headers=admin.headers)).json()
    manifest = json.loads(await collect(storage.get(backup["manifestKey"])))
    assert manifest["pitr"]["startWal"] <= last
    # Not a pg_dump archive: verified by checksum (not parsed as a dump, never marked
    # failed for it), and restored through the PITR route only.
    verified = await client.post(f"/api/backups/{backup['id']}/verify?wait=true",
                                 headers=admin.headers)
    assert verified.json()["status"] == "completed", verified.text
    again = (await client.get(f"/api/backups/{backup['id']}", headers=admin.headers)).json()
    assert again["verification"]["state"] == "passed"
    refused = await client.post(f"/api/backups/{backup['id']}/restore",
                                json={"dryRun": True}, headers=superadmin.headers)
    assert refused.status_code == 409
    assert "/api/pitr/pg/restore" in refused.json()["error"]["message"]

    # What an operator has: the objects copied out of storage, the key, the manifest.
    work = Path(f"/tmp/backvault-pitr-stock-{RUN}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "WALDIR").mkdir(parents=True)
    filename = manifest["storageKey"].rsplit("/", 1)[-1]
    (work / filename).write_bytes(await collect(storage.get(manifest["storageKey"])))
    async for info in storage.list_objects(manifest["walPrefix"]):
        name = info.key.rsplit("/", 1)[-1]
        (work / "WALDIR" / name).write_bytes(await collect(storage.get(info.key)))
    shutil.copy(AGE_KEY_FILE, work / "key.txt")
    user = pwd.getpwnam(RUN_USER)
    for folder, dirs, files in os.walk(work):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid)
    port = _free_port()
    try:
        for step in manifest["restoreSteps"]:
            await _sh(step.replace("PORT", str(port)).replace("WALDIR", str(work / "WALDIR"))
                      .replace("key.txt", str(work / "key.txt")), work)
        await until(lambda: _promoted(port), 120)
        restored = await asyncpg.connect(pg_uri(PG_DB).replace(":55432/", f":{port}/"))
        assert await restored.fetchval("SELECT count(*) FROM pitr_stock") == 777
        await restored.close()
    finally:
        await _sh(f"pg_ctl -D {work}/DATA -m immediate stop || true", work)
        shutil.rmtree(work, ignore_errors=True)

    # wal-fetch: the plaintext of an archived segment, and exit 1 for one never archived.
    segment = await WalSegment.get(f"pg:{last}")
    assert segment is not None
    dest = Path(settings.storage.local_dir or ".").parent / f"fetched-{RUN}"
    assert await _cli(settings, "wal-fetch", "pg", last, str(dest)) == 0
    assert dest.stat().st_size == segment.size
    assert await _cli(settings, "wal-fetch", "pg", "00000009FFFFFFFF000000FF", str(dest)) == 1


async def test_verify_checks_wal_and_drills(app: FastAPI, settings: Settings,
                                            client: httpx.AsyncClient, admin: Account,
                                            viewer: Account) -> None:
    async with archiving(app, settings):
        job = (await client.post("/api/pitr/pg/basebackup", headers=admin.headers)).json()
        base = await wait_job(client, admin.headers, job["id"], timeout=240)
        assert base["status"] == "completed", base
        last = await switch_wal()
        await until(lambda: shipped(last), 30)
    assert (await client.post("/api/pitr/pg/verify", headers=viewer.headers)).status_code \
        == 403
    job = (await client.post("/api/pitr/pg/verify", headers=admin.headers)).json()
    done = await wait_job(client, admin.headers, job["id"], timeout=240)
    assert done["status"] == "completed", done
    assert done["result"]["damaged"] == []
    assert done["result"]["drillSeconds"] > 0
    assert done["result"]["walChecked"] >= 1

    # One stored WAL object changes: the check names it and fails.
    segment = await WalSegment.get(f"pg:{last}")
    assert segment is not None
    storage = app.state.runner.targets.named(segment.storage_target)
    stored = await collect(storage.get(segment.key))
    await storage.put(segment.key, from_bytes(stored[:-1] + bytes([stored[-1] ^ 1])))
    job = (await client.post("/api/pitr/pg/verify?drill=false", headers=admin.headers)).json()
    done = await wait_job(client, admin.headers, job["id"], timeout=120)
    assert done["status"] == "failed"
    assert f"WAL {last}" in done["error"]
