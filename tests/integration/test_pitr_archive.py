"""WAL archiving, base backups and continuity against the local PostgreSQL cluster."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings
from app.models.backup import Backup
from app.models.job import BackupJob
from app.models.wal import WalSegment
from app.services.catalog.stats import backup_health
from app.services.databases.backup import remove_backup
from app.services.pitr import lease
from app.services.pitr.archiver import SourceArchiver, WalArchivers
from app.services.pitr.health import lease_name
from app.services.pitr.retention import prune_wal
from app.services.pitr.ship import PARTIAL
from app.services.pitr.walnames import segment_name
from tests.support.accounts import Account
from tests.support.jobs import wait_job
from tests.support.pitr import archiving as pitr_archiving
from tests.support.pitr import drop_slot, pitr_settings, switch_wal, until
from tests.support.settings import PG_DB, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases", "own_tables_dropped")


@pytest.fixture
async def archiving(app: FastAPI, settings: Settings) -> AsyncIterator[WalArchivers]:
    """Archiving of `pg` running in the app's process, as the lifespan starts it."""
    async with pitr_archiving(app, settings) as archivers:
        yield archivers


async def _restarted(pid: int | None, old: int) -> bool:
    return pid not in (None, old)


async def _shipped(name: str) -> bool:
    return await WalSegment.get(f"pg:{name}") is not None


async def _insert(rows: int) -> None:
    conn = await asyncpg.connect(pg_uri(PG_DB))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS pitr_rows (n int, at timestamptz)")
        await conn.executemany("INSERT INTO pitr_rows VALUES ($1, now())",
                               [(i,) for i in range(rows)])
    finally:
        await conn.close()


async def test_archive_kill_restart_and_gap(client: httpx.AsyncClient, archiving: WalArchivers,
                                            admin: Account, viewer: Account) -> None:
    archiver = archiving.archivers["pg"]
    job = (await client.post("/api/pitr/pg/basebackup", headers=admin.headers)).json()
    done = await wait_job(client, admin.headers, job["id"], timeout=240)
    assert done["status"] == "completed", done
    stop_wal = done["result"]["stopWal"]
    await until(lambda: _shipped(stop_wal), 30)

    await _insert(200)
    first = await switch_wal()
    await until(lambda: _shipped(first))
    # The receiver dies mid-segment; the slot keeps the WAL until it is back.
    await _insert(300)
    old_pid = archiver.state.receiver_pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    await until(lambda: _restarted(archiver.state.receiver_pid, old_pid))
    await _insert(100)
    second = await switch_wal()
    await until(lambda: _shipped(second))

    window = (await client.get("/api/pitr/pg/window", headers=viewer.headers)).json()
    assert window["gaps"] == [], window
    chain = next(c for c in window["baseBackups"] if c["backupId"] == done["backupId"])
    assert chain["restorable"]
    assert chain["reaches"] >= second
    assert window["earliest"] is not None
    assert window["latest"] is not None
    assert (await client.get("/api/pitr/pg", headers=viewer.headers)).json()["gaps"] == []
    listed = (await client.get("/api/pitr", headers=viewer.headers)).json()
    assert [w["source"] for w in listed] == ["pg"]
    reported = await until(lambda: _archiver_report(client, viewer))
    assert reported["holding"] is True
    assert reported["lagBytes"] >= 0
    # The segment being received ships as it grows, recording how much of it holds WAL.
    await _insert(100)
    grown = await until(_grown_partial)
    assert grown.segment > second

    # One archived segment goes: the check names it and the window ends before it.
    lost = await WalSegment.get(f"pg:{first}")
    assert lost is not None
    await app_storage_delete(archiving, lost)
    after = (await client.get("/api/pitr/pg/window", headers=viewer.headers)).json()
    assert [g["firstMissing"] for g in after["gaps"]] == [first]
    assert after["latest"] < window["latest"]
    metrics = (await client.get("/metrics")).text
    assert 'backvault_pitr_wal_gaps{source="pg"} 1.0' in metrics
    assert 'backvault_pitr_slot_lag_bytes{source="pg"}' in metrics

    # The replica receiving the WAL notices, and queues a new base backup.
    await archiver.check_chain()
    assert archiver.state.chain_broken
    queued = await until(_auto_base_backup)
    assert (await wait_job(client, admin.headers, queued, timeout=240))["status"] == "completed"


async def _archiver_report(client: httpx.AsyncClient, viewer: Account) -> Any:
    window = (await client.get("/api/pitr/pg/window", headers=viewer.headers)).json()
    return window["archiver"] if window["archiver"] and \
        window["archiver"].get("lagBytes") is not None else None


async def _grown_partial() -> WalSegment | None:
    found = await WalSegment.find({"source": "pg", "partial": True}).to_list()
    return next((s for s in found if s.end_lsn and s.start_lsn is not None
                 and s.end_lsn > s.start_lsn), None)


async def _auto_base_backup() -> str | None:
    jobs = await BackupJob.find({"kind": "pitr_basebackup", "trigger": "schedule"}).to_list()
    return str(jobs[-1].id) if jobs else None


async def app_storage_delete(archiving: WalArchivers, segment: WalSegment) -> None:
    await archiving.archivers["pg"].targets.named(segment.storage_target).delete(segment.key)
    await segment.delete()


async def test_window_needs_a_postgres_source(client: httpx.AsyncClient,
                                              viewer: Account, admin: Account) -> None:
    assert (await client.get("/api/pitr/mongo/window", headers=viewer.headers)).status_code \
        == 422
    assert (await client.post("/api/pitr/pg/basebackup", headers=viewer.headers)).status_code \
        == 403
    assert (await client.get("/api/pitr/nope/window", headers=viewer.headers)).status_code \
        == 422


@pytest.mark.usefixtures("empty_catalog")
async def test_wal_retention_follows_kept_base_backups(
        app: FastAPI, client: httpx.AsyncClient, archiving: WalArchivers,
        admin: Account) -> None:
    targets = archiving.archivers["pg"].targets
    first = await _base_backup(client, admin)
    older = await switch_wal()
    await until(lambda: _shipped(older))
    second = await _base_backup(client, admin)
    assert await prune_wal(targets, "pg") == []
    assert await WalSegment.get(f"pg:{older}") is not None  # the first base backup needs it

    backup = await Backup.get(PydanticObjectId(first["backupId"]))
    assert backup is not None
    await remove_backup(targets, backup, "test: retention removed it")
    assert await prune_wal(targets, "pg", dry_run=True) == []
    assert await WalSegment.get(f"pg:{older}") is not None  # a dry run deletes nothing
    assert await prune_wal(targets, "pg") == []
    kept = await WalSegment.find({"source": "pg"}).to_list()
    assert await WalSegment.get(f"pg:{older}") is None
    assert min(s.segment for s in kept if not s.partial) == second["result"]["startWal"]
    assert not [k async for k in targets.default.list_objects(f"wal/pg/{older}")]


async def _base_backup(client: httpx.AsyncClient, admin: Account) -> dict[str, Any]:
    job = (await client.post("/api/pitr/pg/basebackup", headers=admin.headers)).json()
    done = await wait_job(client, admin.headers, job["id"], timeout=240)
    assert done["status"] == "completed", done
    stop_wal = done["result"]["stopWal"]
    await until(lambda: _shipped(stop_wal), 30)
    return done


async def test_one_replica_receives_and_another_takes_over(app: FastAPI,
                                                           settings: Settings) -> None:
    config = pitr_settings(settings)
    first = WalArchivers(config, app.state.runner.targets).start()
    second = WalArchivers(config, app.state.runner.targets)
    try:
        await until(lambda: _holding(first))
        second.start()
        await asyncio.sleep(config.pitr.lease_seconds / 2)
        assert second.archivers["pg"].state.receiver_pid is None  # the lease is taken
        await first.stop()
        await second.stop()
        # A replica died holding the lease: nobody receives until it lapses, then one does.
        await lease.take_or_renew("pitr:pg", "dead-replica", 3.0)
        second = WalArchivers(config, app.state.runner.targets).start()
        await asyncio.sleep(1.0)
        assert second.archivers["pg"].state.receiver_pid is None
        await until(lambda: _holding(second), config.pitr.lease_seconds * 3)
        assert (await lease.holder("pitr:pg") or {}).get("owner") == second.owner
    finally:
        await first.stop()
        await second.stop()
        await drop_slot(config)


async def _holding(archivers: WalArchivers) -> bool:
    return archivers.archivers["pg"].state.receiver_pid is not None


async def test_health_names_a_pitr_source_whose_archiving_needs_a_look(
        settings: Settings) -> None:
    source = "pg"
    config = pitr_settings(settings)
    name = lease_name(source)
    assert await lease.holder(name) is None  # no archiver runs outside `archiving`
    health = await backup_health(config)
    (entry,) = [s for s in health.sources if s.source == source]
    assert "WAL archiving is not running on any replica" in entry.issues
    assert entry.status.value in ("warning", "critical")
    assert await lease.take_or_renew(name, "health-test", 30, {
        "holding": True, "chainBroken": True, "lagAlert": False})
    try:
        health = await backup_health(config)
        (entry,) = [s for s in health.sources if s.source == source]
        assert "the WAL chain since the newest base backup has a gap" in entry.issues
    finally:
        await lease.release(name, "health-test")


async def test_a_partial_ships_once_nothing_has_shipped_for_its_interval(
        app: FastAPI, settings: Settings) -> None:
    """The partial segment goes when no file has been shipped for the interval (RPO), not
    each time a new one appears: on a busy source that was a second shipping per segment."""
    source = SourceSettings(name="pgpartial", kind=SourceKind("postgres"),
                            uri=SecretStr(pg_uri(PG_DB)))
    config = pitr_settings(settings.model_copy(update={"sources": [*settings.sources, source]}),
                           sources=["pgpartial"], partial_interval_seconds=30.0)
    archiver = SourceArchiver(config, app.state.runner.targets, source, owner="test")
    archiver.folder.mkdir(parents=True, exist_ok=True)
    first, second = segment_name(1, 0x101), segment_name(1, 0x102)
    try:
        # Just started: what was received goes at once.
        (archiver.folder / f"{first}{PARTIAL}").write_bytes(b"received")
        assert await archiver.ship_ready() == 0
        assert await WalSegment.get(f"pgpartial:{first}{PARTIAL}") is not None
        # The segment completes and ships whole; the next one's partial waits.
        (archiver.folder / f"{first}{PARTIAL}").rename(archiver.folder / first)
        (archiver.folder / f"{second}{PARTIAL}").write_bytes(b"next")
        assert await archiver.ship_ready() == 1
        assert await WalSegment.get(f"pgpartial:{first}") is not None
        assert await WalSegment.get(f"pgpartial:{first}{PARTIAL}") is None  # dropped
        assert await WalSegment.get(f"pgpartial:{second}{PARTIAL}") is None
        # Once nothing has shipped for the interval, it goes.
        assert archiver.state.last_sent is not None
        archiver.state.last_sent -= 31
        assert await archiver.ship_ready() == 0
        shipped = await WalSegment.get(f"pgpartial:{second}{PARTIAL}")
        assert shipped is not None
        # Stopping ships it whatever the interval.
        (archiver.folder / f"{second}{PARTIAL}").write_bytes(b"next, and more")
        await archiver.ship_ready(force_partial=True)
        last = await WalSegment.get(f"pgpartial:{second}{PARTIAL}")
        assert last is not None
        assert last.sha256 != shipped.sha256
    finally:
        await WalSegment.find({"source": "pgpartial"}).delete()
