"""Helpers of the verification-policy and drill tests: settings with drill options, backups
of extra sources, scratch databases on the real servers."""

from typing import Any

import asyncpg
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from app.config import DrillSettings, Settings, SourceKind, SourceSettings
from app.models.backup import Backup
from app.models.drill import RestoreDrill
from app.models.requests import DatabaseBackupCreate
from app.services.access.auth import system_user_id
from app.services.databases.backup import back_up
from app.services.jobs.runner import Progress
from app.services.recoverability.drills import drill_source
from app.services.storage import LocalStorage, StorageTargets, as_targets
from tests.support.settings import MONGO_DB, MONGO_URI, PG_DB, PG_URI, RUN, pg_uri

# Scratch databases of these tests carry the run's id: the end of the run drops leftovers.
PREFIX = f"bvd{RUN}_"


def drill_settings(settings: Settings, **drills: Any) -> Settings:
    """The test settings plus a `drillpg` and a `drillmongo` source (copies of the test
    sources) and the given drill options."""
    extra = [SourceSettings(name="drillpg", kind=SourceKind("postgres"),
                            uri=SecretStr(pg_uri(PG_DB))),
             SourceSettings(name="drillmongo", kind=SourceKind("mongodb"),
                            uri=SecretStr(MONGO_URI + MONGO_DB))]
    sources = [*[s for s in settings.sources if s.name not in ("drillpg", "drillmongo")],
               *extra]
    group = DrillSettings.model_validate({"prefix": PREFIX, **drills})
    return settings.model_copy(update={"sources": sources, "drills": group})


def targets_of(settings: Settings) -> StorageTargets:
    return as_targets(settings, LocalStorage(settings.storage.local_dir))


async def new_backup(settings: Settings, source: str) -> Backup:
    """A completed backup of `source`, written with `settings`."""
    return await back_up(settings, targets_of(settings), Progress(),
                         DatabaseBackupCreate(source=source), admin=await system_user_id())


async def drill(settings: Settings, source: str) -> RestoreDrill:
    return await drill_source(settings, targets_of(settings), source, None, Progress())


async def scratch_databases(kind: str) -> list[str]:
    """The databases of this run's drills that exist on the test server of `kind`."""
    if kind == "postgres":
        conn = await asyncpg.connect(PG_URI)
        try:
            rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                    f"{PREFIX}%")
        finally:
            await conn.close()
        return sorted(r["datname"] for r in rows)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    try:
        return sorted(n for n in await client.list_database_names() if n.startswith(PREFIX))
    finally:
        await client.close()
