"""Response bodies of the console's endpoints: status, dashboard and sources."""

from datetime import date, datetime
from typing import Literal

from beanie import PydanticObjectId
from pydantic import Field

from app.models.backup import BackupOut, BackupStatus, BackupType
from app.models.common import ApiSchema
from app.models.job import JobKind, JobStatus, JobTrigger
from app.models.stats import SourceHealth


class SchedulerState(ApiSchema):
    running: bool = Field(description="this replica's scheduler is started")
    schedules: int = Field(description="enabled schedules")
    next_run: datetime | None = Field(description="the soonest fire of any enabled schedule")


class JobProgressView(ApiSchema):
    """A job's progress with the rate and ETA derived from what the runner records."""

    phase: str | None
    message: str | None
    bytes_done: int = Field(description="bytes read so far: the dump's plaintext for a "
                                        "backup, the stored object for a verify or restore")
    bytes_total: int | None = Field(
        description="verify and restore: the stored size; a database backup: estimated from "
                    "its source's previous good backup; else null")
    bytes_total_estimated: bool = False
    items_done: int
    items_total: int | None
    rate_bytes_per_second: float | None = Field(
        description="bytes done divided by the seconds since the job started")
    eta_seconds: float | None = Field(
        description="from the items (or bytes) left at the current rate; null when unknown")
    percent: float | None = Field(description="items (or bytes) done of the total")


class ActiveJob(ApiSchema):
    id: PydanticObjectId
    kind: JobKind
    status: JobStatus
    trigger: JobTrigger
    source: str | None
    backup_id: PydanticObjectId | None
    created_at: datetime
    started_at: datetime | None
    progress: JobProgressView


class KindStatus(ApiSchema):
    """Database or content backups as a whole."""

    enabled: bool = Field(description="at least one source of this kind is configured")
    last_backup: BackupOut | None
    total: int = Field(description="backups of this kind, the trash not included")
    successful: int = Field(description="completed or restored")
    failed: int


class BackupsStatus(ApiSchema):
    scheduler: SchedulerState
    max_concurrent: int = Field(description="jobs one replica runs at a time")
    active_jobs: list[ActiveJob]
    database: KindStatus
    content: KindStatus
    timestamp: datetime


class RecentBackup(ApiSchema):
    id: PydanticObjectId
    source: str | None
    kind: str | None
    type: BackupType
    status: BackupStatus
    created_at: datetime
    stored_bytes: int | None
    duration_ms: int | None
    started_by: str | None = Field(
        description="name of the user who started it; null when a schedule did")


class PeriodTotals(ApiSchema):
    days: int
    completed: int = Field(description="completed or later restored")
    failed: int
    total: int = Field(description="every backup created in the period, the trash excluded")
    success_rate: float | None = Field(description="percent completed of completed + failed")


class StorageUse(ApiSchema):
    name: str
    bytes: int
    backups: int


class StorageUsage(ApiSchema):
    total_bytes: int = Field(description="every stored artifact: primaries, copies, the trash")
    by_source: list[StorageUse] = Field(
        description="good backups' primary artifacts per source (the trash not counted)")
    by_target: list[StorageUse] = Field(
        description="per storage target, copies on their own target and the trash included")


class ExpiringBackup(ApiSchema):
    id: PydanticObjectId
    source: str | None
    created_at: datetime
    stored_bytes: int | None
    reason: str = Field(description="the retention rule that removes it")
    expires_at: datetime = Field(
        description="when a retention rule first selects it, if nothing else changes; "
                    "now or earlier when it is due at the next cleanup")
    cleanup_at: datetime | None = Field(
        description="the first run of an enabled cleanup schedule at or after expiresAt")


class DayCount(ApiSchema):
    date: date
    completed: int
    failed: int


class DayStorage(ApiSchema):
    """Rebuilt from the records in the catalog: backups retention already removed have no
    record left, so past days show what is still stored, not what was stored then."""

    date: date
    bytes: int = Field(description="bytes stored at the end of that day (UTC) by the "
                                   "artifacts and copies the catalog still records")


class NextRun(ApiSchema):
    schedule_id: PydanticObjectId
    name: str
    kind: str
    sources: list[str] = Field(description="the sources its jobs back up (none: not a backup)")
    at: datetime


class Dashboard(ApiSchema):
    recent: list[RecentBackup]
    last_30_days: PeriodTotals
    storage: StorageUsage
    expiring_next: list[ExpiringBackup]
    per_day: list[DayCount]
    storage_over_time: list[DayStorage]
    next_runs: list[NextRun]
    health: list[SourceHealth]
    timestamp: datetime


class LastGoodBackup(ApiSchema):
    id: PydanticObjectId
    created_at: datetime


class SourceOut(ApiSchema):
    """A configured source as the console shows it; never a credential."""

    name: str
    kind: str = Field(description="postgres, mongodb, or the content source's kind")
    category: Literal["database", "content"]
    host: str | None = Field(description="host from the URI (content: the Kubo API's host)")
    port: int | None
    database: str | None
    content_type: str | None = Field(default=None, description="ipfs or gaia (content only)")
    enabled: bool
    managed: Literal["environment", "catalog"] = Field(
        default="environment", description="environment: read-only here; catalog: added at "
                                           "runtime (edited through /api/sources/{name})")
    last_good_backup: LastGoodBackup | None
    next_run: datetime | None


class SourceTestResult(ApiSchema):
    name: str
    kind: str
    reachable: bool
    server_version: str | None
    latency_ms: float | None
    error: str | None = Field(description="why it failed, without credentials")
    tested_at: datetime
