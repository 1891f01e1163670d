"""BackupJob: every operation the service runs, with its progress and lease."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from beanie import Document, PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.models.common import ApiSchema, document_alias, utcnow


class JobKind(StrEnum):
    database = "database"
    content = "content"
    full = "full"
    verify = "verify"
    restore = "restore"
    cleanup = "cleanup"
    stats_report = "stats_report"
    health_check = "health_check"
    content_import = "content_import"
    restore_drill = "restore_drill"
    reverify = "reverify"
    catalog_rebuild = "catalog_rebuild"
    pitr_basebackup = "pitr_basebackup"
    pitr_restore = "pitr_restore"
    pitr_verify = "pitr_verify"


# Rerun when interrupted: these either write a new backup or only read. A restore
# changes a live database, so it is never repeated behind an operator's back.
RETRYABLE_KINDS = frozenset({JobKind.database, JobKind.content, JobKind.full, JobKind.verify,
                             JobKind.cleanup, JobKind.stats_report, JobKind.health_check,
                             JobKind.catalog_rebuild})
# PITR: a base backup writes a new backup, a verify reads (its drill uses a new folder).
RETRYABLE_KINDS |= {JobKind.pitr_basebackup, JobKind.pitr_verify}


class JobTrigger(StrEnum):
    api = "api"
    cli = "cli"
    schedule = "schedule"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    interrupted = "interrupted"


FINISHED_JOB_STATUSES = (JobStatus.completed, JobStatus.failed, JobStatus.interrupted)
# A cancelled job ends failed with this error, followed by the username.
CANCELLED_BY = "cancelled by "


class JobProgress(BaseModel):
    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    phase: str | None = None
    bytes_read: int = 0
    bytes_written: int = 0
    items_done: int = 0
    items_total: int | None = None
    message: str | None = None


class BackupJob(Document):
    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True,
                              validate_assignment=True)

    kind: JobKind
    trigger: JobTrigger = JobTrigger.api
    status: JobStatus = JobStatus.queued
    source: str | None = None
    backup_id: PydanticObjectId | None = None
    schedule_id: PydanticObjectId | None = None
    fire_id: PydanticObjectId | None = None
    requested_by: PydanticObjectId | None = None
    retry_of: PydanticObjectId | None = None
    retry_job_id: PydanticObjectId | None = None
    params: dict[str, Any] = {}
    progress: JobProgress = JobProgress()
    result: dict[str, Any] = {}
    error: str | None = None
    attempts: int = Field(default=0, ge=0)
    max_attempts: int = Field(default=1, ge=1)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    # Set by a cancel request; the replica running the job notices it at its next heartbeat.
    cancel_requested_at: datetime | None = None
    cancel_requested_by: str | None = None

    class Settings:
        name = "backup_jobs"
        # Oldest queued first for the runner; (createdAt, _id) descending for the list,
        # led by each filter it offers; finishedAt for pruning.
        indexes = [
            IndexModel([("status", ASCENDING), ("createdAt", ASCENDING), ("_id", ASCENDING)]),
            IndexModel([("createdAt", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("kind", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("source", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("status", ASCENDING), ("finishedAt", ASCENDING)]),
            IndexModel([("backupId", ASCENDING)]),
            IndexModel([("fireId", ASCENDING)]),
            IndexModel([("scheduleId", ASCENDING), ("createdAt", DESCENDING)]),
        ]


class JobOut(ApiSchema):
    id: PydanticObjectId
    kind: JobKind
    trigger: JobTrigger
    status: JobStatus
    source: str | None
    backup_id: PydanticObjectId | None
    schedule_id: PydanticObjectId | None
    fire_id: PydanticObjectId | None
    requested_by: PydanticObjectId | None
    retry_of: PydanticObjectId | None
    retry_job_id: PydanticObjectId | None
    params: dict[str, Any]
    progress: JobProgress
    result: dict[str, Any]
    error: str | None
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    heartbeat_at: datetime | None
    cancel_requested_at: datetime | None = None
    cancel_requested_by: str | None = None
    duration_ms: int | None = None


class JobFilter(ApiSchema):
    page: int = Field(default=1, ge=1, le=100_000)
    limit: int = Field(default=20, ge=1, le=100)
    status: JobStatus | None = None
    kind: JobKind | None = None
    source: str | None = Field(default=None, max_length=63)
