"""How the service runs: system, tools, schedules, retention, limits, notifications,
auth, HTTP, login throttling, audit."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    model_validator,
)

from app.config.common import Crontab, Environment, Group, TimeZoneName, empty_as_none


class SystemSettings(Group):
    enabled: bool = True
    timezone: TimeZoneName = "UTC"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    environment: Environment = Environment.development
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    replica_id: Annotated[str | None, BeforeValidator(empty_as_none)] = None
    # A running job's replica renews its lease every second; a job whose lease has
    # lapsed this long is interrupted and retried by another replica.
    lease_seconds: float = Field(default=30.0, ge=2, le=3600)
    # Reverse proxies whose X-Forwarded-For / -Proto are believed (comma-separated
    # addresses, as uvicorn's forwarded_allow_ips). Empty: none, so a client cannot pick
    # the address that login throttling and the audit log see.
    trusted_proxies: Annotated[str | None, BeforeValidator(empty_as_none)] = None


class ToolSettings(Group):
    # pg_dump must be at least the server's major version.
    pg_bin_dir: Annotated[Path | None, BeforeValidator(empty_as_none)] = None


class ScheduleSettings(Group):
    daily: Crontab = "0 2 * * *"
    weekly: Crontab = "0 3 * * 0"
    monthly: Crontab = "0 4 1 * *"
    cleanup: Crontab = "0 5 * * 0"
    stats_report: Crontab = "0 5 * * 0"
    health_check: Crontab = "0 6 1 * *"
    daily_retention_days: int = Field(default=7, ge=1, le=365)
    weekly_retention_days: int = Field(default=30, ge=1, le=365)
    monthly_retention_days: int = Field(default=90, ge=1, le=365)
    # Fires missed while no replica ran: the newest within this window runs once on
    # start, older ones are recorded as missed.
    misfire_grace_seconds: int = Field(default=3600, ge=0)
    # How often each replica re-reads the schedules (edits apply without a restart).
    reload_seconds: float = Field(default=5.0, gt=0, le=300)
    # Schedules firing more often than once a minute (a leading seconds field) are
    # refused unless this is on (tests and demos use it).
    allow_sub_minute: bool = False


class RetentionSettings(Group):
    days: int = Field(default=30, ge=1, le=365)
    max_count: int = Field(default=30, ge=1)
    min_count: int = Field(default=3, ge=0)
    # Grandfather-father-son: also keep the newest good backup of each of the last N
    # days / ISO weeks / months / years of a source, whatever its age. 0: off.
    keep_daily: int = Field(default=0, ge=0, le=3650)
    keep_weekly: int = Field(default=0, ge=0, le=520)
    keep_monthly: int = Field(default=0, ge=0, le=1200)
    keep_yearly: int = Field(default=0, ge=0, le=100)
    # A deleted backup stays in the trash (undeletable) this long; retention empties it.
    trash_days: int = Field(default=7, ge=0, le=365)
    # Finished jobs and schedule fires older than this are pruned from the catalog.
    history_days: int = Field(default=90, ge=1, le=3650)

    @model_validator(mode="after")
    def _min_below_max(self) -> "RetentionSettings":
        if self.min_count > self.max_count:
            raise ValueError("retention.min_count cannot exceed retention.max_count")
        return self


class LimitSettings(Group):
    max_size_mb: int = Field(default=1000, ge=1)
    timeout_seconds: int = Field(default=3600, ge=1)
    max_concurrent_jobs: int = Field(default=2, ge=1, le=64)
    # Runs of an interrupted backup, verify or cleanup job in all (restores run once).
    job_attempts: int = Field(default=2, ge=1, le=10)
    # Cap on stored MB/s per job; None: no cap.
    bandwidth_mbps: Annotated[Annotated[float, Field(gt=0)] | None,
                              BeforeValidator(empty_as_none)] = None


class NotificationSettings(Group):
    # Apprise URLs embed credentials, so each one is a secret.
    urls: list[SecretStr] = []
    on_success: bool = True
    on_failure: bool = True
    on_restore: bool = True
    on_cleanup: bool = True
    on_stats_report: bool = True
    on_health: bool = True
    timeout_seconds: float = Field(default=15.0, gt=0, le=300)


class AuthSettings(Group):
    jwt_secret: SecretStr = SecretStr("change-me-development-only-jwt-secret")
    jwt_issuer: str = "backvault"
    jwt_audience: str = "backvault-api"
    token_minutes: int = Field(default=60, ge=1, le=24 * 60)
    bootstrap_username: str | None = "admin"
    bootstrap_email: str | None = "admin@localhost"
    bootstrap_password: SecretStr | None = SecretStr("change-me-admin")


class HttpSettings(Group):
    # Request bodies above this are refused (413) before they are read whole.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # A body that does not arrive within this is refused (408).
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # JSON nested deeper than this is refused (400).
    max_json_depth: int = Field(default=32, ge=2, le=1000)


class LoginSettings(Group):
    # Failed logins per username and per client address before backoff starts.
    free_failures: int = Field(default=5, ge=1, le=1000)
    # Backoff after that: base doubled per further failure, capped.
    backoff_base_seconds: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_seconds: float = Field(default=900.0, gt=0, le=86400)
    # Failures older than this no longer count.
    window_seconds: float = Field(default=900.0, gt=0, le=86400)


class AuditSettings(Group):
    retention_days: int = Field(default=365, ge=1, le=36500)
