"""What a drill does to its scratch database besides the restore: run the source's checks
and drop it. Per kind of database; the restore itself is the kind's own."""

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from app.config import Settings, SourceCheck, SourceSettings
from app.services.databases.postgres.source import Connection, quote_ident

CheckRunner = Callable[[SourceSettings, str, SourceCheck, datetime], Awaitable[float]]
Dropper = Callable[[SourceSettings, str], Awaitable[None]]
CHECK_TIMEOUT_S = 300.0


def _mongo(source: SourceSettings) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(source.uri.get_secret_value(), serverSelectionTimeoutMS=10_000,
                            tz_aware=True)


async def _pg_check(source: SourceSettings, database: str, check: SourceCheck,
                    backup_time: datetime) -> float:
    assert check.sql is not None
    conn = await Connection.parse(source.uri.get_secret_value(), database).connect()
    try:
        # A check only reads; $1 is the backup's time when the query asks for it.
        async with conn.transaction(readonly=True):
            args = [backup_time] if "$1" in check.sql else []
            value = await conn.fetchval(check.sql, *args, timeout=CHECK_TIMEOUT_S)
    finally:
        await conn.close()
    return float(value)


async def _pg_drop(source: SourceSettings, database: str) -> None:
    conn = await Connection.parse(source.uri.get_secret_value()).connect()
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
    finally:
        await conn.close()


async def _mongo_check(source: SourceSettings, database: str, check: SourceCheck,
                       backup_time: datetime) -> float:
    assert check.collection is not None
    query = dict(check.filter)
    if check.time_field and check.within_days:
        query[check.time_field] = {"$gte": backup_time - timedelta(days=check.within_days),
                                   "$lte": backup_time}
    client = _mongo(source)
    try:
        return float(await client[database][check.collection].count_documents(
            query, maxTimeMS=int(CHECK_TIMEOUT_S * 1000)))
    finally:
        await client.close()


async def _mongo_drop(source: SourceSettings, database: str) -> None:
    client = _mongo(source)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


CHECKS: dict[str, CheckRunner] = {"postgres": _pg_check, "mongodb": _mongo_check}
DROPS: dict[str, Dropper] = {"postgres": _pg_drop, "mongodb": _mongo_drop}
ITEM_WORD = {"postgres": "table", "mongodb": "collection"}


def scratch_source(settings: Settings, source: SourceSettings) -> SourceSettings:
    """The source as the drill sees it: on the drill server when one is configured."""
    server = settings.drills.for_source(source.name).uri
    return source if server is None else source.model_copy(update={"uri": server})


async def run_check(source: SourceSettings, database: str, check: SourceCheck,
                    backup_time: datetime) -> float:
    return await CHECKS[source.kind.value](source, database, check, backup_time)


async def drop_scratch(settings: Settings, source: SourceSettings, database: str) -> None:
    """Drop a scratch database; refuses any name without the drill prefix."""
    prefix = settings.drills.prefix
    if not prefix or not database.startswith(prefix):
        raise ValueError(f"refused to drop {database!r}: not a drill scratch database")
    await DROPS[source.kind.value](source, database)
