"""PostgreSQL beside backup and restore: its version, a drill's checks and scratch drop,
and whether our pg_dump can dump the server."""

import re
from datetime import datetime
from typing import Any

import asyncpg

from app.config import Settings, SourceCheck, SourceSettings
from app.services.databases.postgres.source import Connection, PgTools, quote_ident

CHECK_TIMEOUT_S = 300.0
MAJOR = re.compile(r"(\d+)")


def major(version: str | None) -> int | None:
    found = MAJOR.search(version or "")
    return int(found.group(1)) if found else None


async def server_version(source: SourceSettings, timeout: float) -> str | None:
    """Connect and ask `server_version`."""
    uri = source.uri.get_secret_value()
    conn = await asyncpg.connect(Connection.parse(uri, source.database_name()).dsn,
                                 timeout=timeout)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def count_check(source: SourceSettings, database: str, check: SourceCheck,
                      backup_time: datetime) -> float:
    """A drill's SQL check on `database`: read only; $1 is the backup's time."""
    if check.sql is None:
        raise ValueError("a postgres source's check needs sql")
    conn = await Connection.parse(source.uri.get_secret_value(), database).connect()
    try:
        async with conn.transaction(readonly=True):
            args = [backup_time] if "$1" in check.sql else []
            value = await conn.fetchval(check.sql, *args, timeout=CHECK_TIMEOUT_S)
    finally:
        await conn.close()
    return float(value)


async def drop_database(source: SourceSettings, database: str) -> None:
    conn = await Connection.parse(source.uri.get_secret_value()).connect()
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
    finally:
        await conn.close()


async def tool_problem(settings: Settings, version: str | None
                       ) -> tuple[dict[str, Any], str | None]:
    """pg_dump's version, and why it cannot dump a server of `version` (an older major)."""
    tool = await PgTools(settings.tools.pg_bin_dir).version("pg_dump")
    server, dump = major(version), major(tool.rsplit(" ", 1)[-1])
    if server is None or dump is None or dump < server:
        return {"toolVersion": tool}, (
            f"pg_dump {dump} is older than the server's major {server}: dumps would fail "
            "(install a newer pg_dump or set BACKUP_TOOLS__PG_BIN_DIR)")
    return {"toolVersion": tool}, None
