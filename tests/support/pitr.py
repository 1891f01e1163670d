"""PITR test helpers: settings with archiving on, the archiver's run, slot clean-up."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI

from app.config import PitrSettings, Settings
from app.models.wal import WalSegment
from app.services.pitr.archiver import WalArchivers, slot_name
from tests.support.settings import PG_URI, RUN, WORK


def pitr_settings(base: Settings, **changes: Any) -> Settings:
    """The app's settings with WAL archiving of source `pg` (spool and restores per run)."""
    group = {"sources": ["pg"], "receive_dir": WORK / "pitr-spool",
             "partial_interval_seconds": 1.0, "slot_prefix": f"bvt_{RUN}_",
             "lease_seconds": 6.0, **changes}
    return base.model_copy(update={"pitr": PitrSettings(**group)})


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def drop_slot(settings: Settings, source: str = "pg") -> None:
    """Tests drop their slot (the service never does): it would hold WAL back forever."""
    conn = await asyncpg.connect(PG_URI)
    try:
        await until(lambda: _slot_inactive(conn, slot_name(settings, source)), 15)
        await conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                           "pg_replication_slots WHERE slot_name = $1",
                           slot_name(settings, source))
    finally:
        await conn.close()


async def _slot_inactive(conn: asyncpg.Connection, slot: str) -> bool:
    return not await conn.fetchval(
        "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot)


async def switch_wal() -> str:
    conn = await asyncpg.connect(PG_URI)
    try:
        return str(await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())"))
    finally:
        await conn.close()



@asynccontextmanager
async def archiving(app: FastAPI, base: Settings) -> AsyncIterator[WalArchivers]:
    """Archiving of `pg` running in the app's process, as the lifespan starts it; the test's
    slot is dropped at the end."""
    config = pitr_settings(base)
    await WalSegment.find_all().delete()
    archivers = WalArchivers(config, app.state.runner.targets, runner=app.state.runner).start()
    archiver = archivers.archivers["pg"]
    try:
        await until(lambda: _value(archiver.state.receiver_pid))
        yield archivers
    finally:
        await archivers.stop()
        await drop_slot(config)


async def _value(value: Any) -> Any:
    return value


async def shipped(name: str) -> bool:
    return await WalSegment.get(f"pg:{name}") is not None
