"""Response bodies of the statistics and health endpoints."""

from datetime import datetime
from enum import StrEnum

from beanie import PydanticObjectId
from pydantic import Field

from app.models.common import ApiSchema


class SizeStats(ApiSchema):
    count: int
    total_size_mb: float = Field(alias="totalSizeMB")
    avg_size_mb: float | None = Field(alias="avgSizeMB")
    max_size_mb: float | None = Field(alias="maxSizeMB")
    min_size_mb: float | None = Field(alias="minSizeMB")


class SuccessRate(ApiSchema):
    total: int
    successful: int
    failed: int
    success_rate: float | None = Field(description="percent of all backups that succeeded")


class MonthlyStatus(ApiSchema):
    status: str
    count: int
    size: float


class MonthlyReport(ApiSchema):
    year: int
    month: int
    statuses: list[MonthlyStatus]
    total_backups: int
    total_size: float


class AdminActivity(ApiSchema):
    admin_id: PydanticObjectId | None
    admin_name: str | None
    admin_email: str | None
    total_backups: int
    manual_backups: int
    successful_backups: int
    last_backup: datetime | None


class RecentActivity(ApiSchema):
    id: PydanticObjectId
    type: str | None
    status: str | None
    created_at: datetime
    admin_name: str | None


class BackupStats(ApiSchema):
    total_backups: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    size: SizeStats
    success_rate: SuccessRate
    monthly: list[MonthlyReport]
    admin_activity: list[AdminActivity]
    recent_activity: list[RecentActivity]
    oldest_backup: datetime | None
    newest_backup: datetime | None
    backups_last_24_hours: int
    backups_last_7_days: int
    average_duration_seconds: float | None
    compression_usage: dict[str, int] = Field(
        default={}, description="good backups per compression algorithm (zstd, gzip, none)")
    total_stored_bytes: int = Field(default=0, description="bytes of the good backups' "
                                                           "stored objects")
    average_stored_bytes: float | None = None


class HealthStatus(StrEnum):
    healthy = "healthy"
    warning = "warning"
    critical = "critical"


class SourceHealth(ApiSchema):
    """The health rules applied to the backups of one configured source."""

    source: str
    kind: str = Field(description="database or content")
    status: HealthStatus
    issues: list[str]
    has_recent_backup: bool
    last_successful_backup: datetime | None
    recent_failures: int
    good_backups: int = Field(description="good backups that count toward the retention "
                                          "minimum (no safety copies, none in the trash)")


class HealthReport(ApiSchema):
    status: HealthStatus = Field(description="the worst of the sources' statuses")
    issues: list[str]
    has_recent_backup: bool = Field(description="every source has a good backup in 24 h")
    last_successful_backup: datetime | None = Field(
        description="the newest good backup of any source")
    recent_failures: int
    total_backups: int = Field(description="backups in the catalog, the trash not included")
    total_storage_used_mb: float = Field(alias="totalStorageUsedMB")
    timestamp: datetime
    sources: list[SourceHealth] = []
