"""Catalog documents on the real MongoDB server: seed fields, messages, indexes, storage names."""

from datetime import UTC, datetime
from typing import Any

import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI
from pydantic import ValidationError

from app.models.backup import Backup, BackupStatus, BackupType
from app.models.job import BackupJob, JobKind, JobStatus
from app.models.user import Role, User

ADMIN = PydanticObjectId()

pytestmark = pytest.mark.usefixtures("app", "empty_catalog")


def messages(exc: ValidationError) -> list[str]:
    return [e["msg"] for e in exc.errors()]


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "Please provide admin ID"),
    ({"admin": ADMIN, "type": "scheduled"}, "Type must be manual or automatic"),
    ({"admin": ADMIN, "type": None}, "Please provide backup type"),
    ({"admin": ADMIN, "status": "done"}, "Invalid backup status"),
    ({"admin": ADMIN, "sizeMB": -0.5}, "Size cannot be negative"),
    ({"admin": ADMIN, "retentionDays": 0}, "Retention must be between 1 and 365 days"),
    ({"admin": ADMIN, "retentionDays": 366}, "Retention must be between 1 and 365 days"),
    ({"admin": ADMIN, "retentionDays": 7.5}, "Retention must be between 1 and 365 days"),
    ({"admin": ADMIN, "retentionDays": None}, "Please provide retention days"),
])
def test_validation_messages_are_the_seeds_word_for_word(fields: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(ValidationError) as err:
        Backup(**fields)
    assert messages(err.value) == [message]


def test_defaults_lowercasing_and_boundaries() -> None:
    backup = Backup(admin=ADMIN, type="AUTOMATIC", status=" Completed ")
    assert backup.type is BackupType.automatic
    assert backup.status is BackupStatus.completed
    assert backup.retention_days == 30
    assert Backup(admin=ADMIN).type is BackupType.manual
    assert Backup(admin=ADMIN).status is BackupStatus.pending
    assert Backup(admin=ADMIN, retentionDays=1).retention_days == 1
    assert Backup(admin=ADMIN, retentionDays=365).retention_days == 365
    assert Backup(admin=ADMIN, sizeMB=0).size_mb == 0


def test_assignment_is_validated_too() -> None:
    backup = Backup(admin=ADMIN)
    with pytest.raises(ValidationError) as err:
        backup.status = "archived"  # type: ignore[assignment]
    assert messages(err.value) == ["Invalid backup status"]
    with pytest.raises(ValidationError) as err:
        backup.size_mb = -1
    assert messages(err.value) == ["Size cannot be negative"]


async def test_stored_with_the_seeds_field_names_and_read_back(app: FastAPI) -> None:
    created = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    backup = Backup(admin=ADMIN, type="manual", status="completed", sizeMB=245.5,
                    notes="Pre-upgrade backup before v2.0 deployment", created_at=created,
                    source="demo-pg", format_chain=["pgdump", "zst", "age"])
    await backup.insert()
    raw = await Backup.get_pymongo_collection().find_one({"_id": backup.id})
    assert raw is not None
    assert {"admin", "type", "status", "sizeMB", "retentionDays", "notes", "restoredAt",
            "createdAt", "updatedAt", "formatChain"} <= set(raw)
    assert raw["sizeMB"] == 245.5
    assert raw["retentionDays"] == 30
    assert raw["type"] == "manual"
    again = await Backup.get(backup.id)
    assert again is not None
    assert again.size_mb == 245.5
    assert again.created_at == created
    assert again.format_chain == ["pgdump", "zst", "age"]


async def test_backup_indexes_exist(app: FastAPI) -> None:
    info = await Backup.get_pymongo_collection().index_information()
    keys = {tuple((k, int(d)) for k, d in spec["key"]) for spec in info.values()}
    # Each list filter leads an index that also serves the newest-first order.
    newest = [("createdAt", -1), ("_id", -1)]
    for expected in ([("admin", 1)], newest, [("status", 1), *newest], [("type", 1), *newest],
                     [("source", 1), *newest]):
        assert tuple(expected) in keys


async def test_job_and_user_documents(app: FastAPI) -> None:
    job = BackupJob(kind=JobKind.database, source="demo-pg")
    await job.insert()
    loaded = await BackupJob.get(job.id)
    assert loaded is not None
    assert loaded.status is JobStatus.queued
    assert loaded.attempts == 0
    with pytest.raises(ValidationError):
        BackupJob(kind="defrag")
    with pytest.raises(ValidationError):
        BackupJob(kind=JobKind.restore, status="paused")
    user_indexes = await User.get_pymongo_collection().index_information()
    assert any(spec.get("unique") for spec in user_indexes.values())
    assert Role.superadmin.allows(Role.admin)
    assert not Role.viewer.allows(Role.admin)


async def test_starting_again_on_an_existing_catalog_keeps_its_indexes(app: FastAPI) -> None:
    from app.services.catalog.db import ensure_indexes

    before = await Backup.get_pymongo_collection().index_information()
    await ensure_indexes()  # what every later start does
    await ensure_indexes()
    assert await Backup.get_pymongo_collection().index_information() == before
