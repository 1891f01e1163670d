"""MongoDB beside backup and restore: its version, a drill's checks and scratch drop (our
own archive writer and reader need no external tool)."""

from datetime import datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from app.config import Settings, SourceCheck, SourceSettings

CHECK_TIMEOUT_S = 300.0


def _client(source: SourceSettings, timeout: float = 10.0) -> AsyncMongoClient[dict[str, Any]]:
    ms = int(timeout * 1000)
    return AsyncMongoClient(source.uri.get_secret_value(), serverSelectionTimeoutMS=ms,
                            connectTimeoutMS=ms, tz_aware=True, appname="backvault")


async def server_version(source: SourceSettings, timeout: float) -> str | None:
    """Select a server and ask `buildInfo`."""
    client = _client(source, timeout)
    try:
        info = await client.admin.command("buildInfo")
        return str(info.get("version")) if info.get("version") else None
    finally:
        await client.close()


async def count_check(source: SourceSettings, database: str, check: SourceCheck,
                      backup_time: datetime) -> float:
    """A drill's check: documents of a collection matching a filter (and a time window
    before the backup)."""
    if check.collection is None or check.sql is not None:
        raise ValueError("a mongodb source's check needs collection (and no sql)")
    query = dict(check.filter)
    if check.time_field and check.within_days:
        query[check.time_field] = {"$gte": backup_time - timedelta(days=check.within_days),
                                   "$lte": backup_time}
    client = _client(source)
    try:
        return float(await client[database][check.collection].count_documents(
            query, maxTimeMS=int(CHECK_TIMEOUT_S * 1000)))
    finally:
        await client.close()


async def drop_database(source: SourceSettings, database: str) -> None:
    client = _client(source)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


async def tool_problem(settings: Settings, version: str | None
                       ) -> tuple[dict[str, Any], str | None]:
    return {}, None
