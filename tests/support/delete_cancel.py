"""Helpers of the delete-safety and cancel tests: extra sources, real backups, store files."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from beanie import PydanticObjectId
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings
from app.models.backup import Backup
from app.models.job import BackupJob
from app.models.requests import DatabaseBackupCreate
from app.services.databases.backup import back_up
from app.services.jobs.runner import Progress
from app.services.storage import LocalStorage


def with_source(settings: Settings, name: str, uri: str, **groups: dict[str, Any]) -> Settings:
    """The settings plus a PostgreSQL source `name` at `uri`, with some groups changed."""
    update: dict[str, Any] = {"sources": [
        *settings.sources, SourceSettings(name=name, kind=SourceKind("postgres"),
                                          uri=SecretStr(uri))]}
    for group, changes in groups.items():
        update[group] = getattr(settings, group).model_copy(update=changes)
    return settings.model_copy(update=update)


def store(settings: Settings) -> LocalStorage:
    return LocalStorage(settings.storage.local_dir)


async def real_backup(settings: Settings, source: str, admin: PydanticObjectId | None,
                      retention_days: int | None = None) -> Backup:
    """A small real backup (one table) of `source`, stored in the local store."""
    body = DatabaseBackupCreate(source=source, tables=["authors"])
    if retention_days is not None:
        body = body.model_copy(update={"retention_days": retention_days})
    return await back_up(settings, store(settings), Progress(), body, admin=admin)


def files_of(settings: Settings, backup_id: PydanticObjectId | str | None) -> list[Path]:
    """Every file in the local store whose name holds the backup id (objects, partials)."""
    assert backup_id is not None
    root = store(settings).root
    return sorted(p for p in root.rglob(f"*{backup_id}*") if p.is_file())


@asynccontextmanager
async def app_runner_paused(app: FastAPI) -> AsyncIterator[None]:
    """The app's own runner stopped, so queued jobs stay queued (or go to another runner)."""
    await app.state.runner.stop()
    # A job another test left running would hold one of the concurrency slots.
    await BackupJob.get_pymongo_collection().update_many(
        {"status": "running"}, {"$set": {"status": "interrupted", "leaseExpiresAt": None,
                                         "retryJobId": PydanticObjectId()}})
    try:
        yield
    finally:
        app.state.runner.start()
