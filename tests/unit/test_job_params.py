"""Typed job params: jobs already in a catalog still read, stray keys are refused, a
schedule's fire time is accepted on every kind."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.models.backup import BackupType
from app.models.content import ContentBackupCreate
from app.models.job import BackupJob, JobKind
from app.models.job_params import (
    PARAMS_OF_KIND,
    CleanupParams,
    ContentImportParams,
    ContentParams,
    DatabaseParams,
    FullParams,
    ReportParams,
    RestoreParams,
    VerifyParams,
    checked_params,
    params_of,
)
from app.models.requests import DatabaseBackupCreate

FIRE = "2026-03-01T05:00:00+00:00"


def stored_job(kind: JobKind, params: dict[str, Any]) -> BackupJob:
    # As loaded from the catalog (construct: no database needed to hold a document).
    job: BackupJob = BackupJob.model_construct(kind=kind, params=params)
    return job


# Params exactly as earlier versions stored them.
OLD_SHAPES: list[tuple[JobKind, type[Any], dict[str, Any]]] = [
    (JobKind.database, DatabaseParams, {
        "request": {"source": "pg", "schemaOnly": False, "dataOnly": False, "tables": ["t"],
                    "collections": [], "allowPartial": False, "notes": "n",
                    "retentionDays": 7, "copyTargets": []},
        "backupType": "automatic", "fireTime": FIRE}),
    (JobKind.database, DatabaseParams, {"request": {"source": "pg"}, "backupType": "manual"}),
    (JobKind.content, ContentParams, {"request": {"source": "ipfs", "notes": None,
                                                  "retentionDays": None},
                                      "backupType": "manual"}),
    (JobKind.full, FullParams, {"sources": ["pg"], "contentSources": [], "notes": None,
                                "retentionDays": 3}),
    (JobKind.verify, VerifyParams, {}),
    (JobKind.restore, RestoreParams, {"target_database": "copy", "drop_existing": True,
                                      "dry_run": False, "safety_backup": False,
                                      "confirm": "copy"}),
    (JobKind.cleanup, CleanupParams, {"dryRun": False, "source": None, "fireTime": FIRE}),
    (JobKind.stats_report, ReportParams, {"fireTime": FIRE}),
    (JobKind.health_check, ReportParams, {}),
    (JobKind.content_import, ContentImportParams, {"pin": False}),
]


@pytest.mark.parametrize(("kind", "model", "params"), OLD_SHAPES)
def test_params_stored_by_earlier_versions_still_read(kind: JobKind, model: type[Any],
                                                      params: dict[str, Any]) -> None:
    read = params_of(stored_job(kind, params), model)
    assert isinstance(read, model)
    # Stored again, they read the same: a retried job runs what the first attempt ran.
    assert model.model_validate(checked_params(kind, params)) == read


def test_old_fields_come_back_typed() -> None:
    database = params_of(stored_job(*OLD_SHAPES[0][::2]), DatabaseParams)
    assert database.request.tables == ["t"]
    assert database.request.retention_days == 7
    assert database.backup_type is BackupType.automatic
    assert database.fire_time == datetime(2026, 3, 1, 5, tzinfo=UTC)
    restore = params_of(stored_job(JobKind.restore, OLD_SHAPES[5][2]), RestoreParams)
    assert restore.target_database == "copy"
    assert restore.drop_existing
    assert not restore.safety_backup
    assert restore.confirm == "copy"
    full = params_of(stored_job(JobKind.full, OLD_SHAPES[3][2]), FullParams)
    assert full.sources == ["pg"]
    assert full.retention_days == 3


def test_the_stored_shape_is_camel_case_without_an_empty_fire_time() -> None:
    params = DatabaseParams(request=DatabaseBackupCreate(source="pg", retention_days=5))
    stored = checked_params(JobKind.database, params)
    assert stored["backupType"] == "manual"
    assert "fireTime" not in stored
    assert stored["request"]["source"] == "pg"
    assert stored["request"]["retentionDays"] == 5
    cleanup = checked_params(JobKind.cleanup, CleanupParams(dry_run=True, source="pg"))
    assert cleanup == {"dryRun": True, "source": "pg"}
    restore = checked_params(JobKind.restore, RestoreParams(target_database="x"))
    assert restore["targetDatabase"] == "x"
    assert "target_database" not in restore


@pytest.mark.parametrize("kind", list(JobKind))
def test_every_kind_takes_a_schedule_fire_time(kind: JobKind) -> None:
    # The scheduled-cleanup failure: the fire time a schedule adds was refused.
    base: dict[str, Any] = ({"request": {"source": "s"}}
                            if kind in (JobKind.database, JobKind.content) else {})
    if kind is JobKind.full:
        base = {"sources": [], "contentSources": []}
    if kind in (JobKind.pitr_basebackup, JobKind.pitr_verify):
        base = {"source": "pg"}
    if kind is JobKind.pitr_restore:
        base = {"source": "pg", "latest": True}
    stored = checked_params(kind, {**base, "fireTime": FIRE})
    assert PARAMS_OF_KIND[kind].model_validate(stored).fire_time is not None


@pytest.mark.parametrize(("kind", "params"), [
    (JobKind.cleanup, {"dryRun": False, "force": True}),
    (JobKind.verify, {"deep": True}),
    (JobKind.restore, {"targetDatabase": "x", "dropEverything": True}),
    (JobKind.database, {"request": {"source": "pg", "password": "x"}}),
    (JobKind.content, {"request": {"source": "ipfs"}, "backupType": "weekly"}),
])
def test_unknown_or_wrong_params_are_refused(kind: JobKind, params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        checked_params(kind, params)


def test_a_handler_reading_another_kinds_model_fails_loudly() -> None:
    job = stored_job(JobKind.content, {"request": {"source": "ipfs"}})
    with pytest.raises(TypeError, match="ContentParams"):
        params_of(job, DatabaseParams)


def test_params_of_another_kind_are_refused_at_submit() -> None:
    # A content model handed in for a database job must not slip through as a dict.
    content = ContentParams(request=ContentBackupCreate(source="ipfs"))
    with pytest.raises(TypeError, match="DatabaseParams"):
        checked_params(JobKind.database, content)
