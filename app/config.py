"""Settings: the only place the environment is read (prefix BACKUP_, groups split by `__`)."""

import re
import zoneinfo
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.scheduler.cron import validate_crontab


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class SourceKind(StrEnum):
    postgres = "postgres"
    mongodb = "mongodb"


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _empty_as_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _known_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r}") from exc
    return value


Crontab = Annotated[str, AfterValidator(validate_crontab)]
TimeZoneName = Annotated[str, AfterValidator(_known_timezone)]
SourceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
# age X25519 recipient: "age1" + 58 bech32 characters.
AgeRecipient = Annotated[str, Field(pattern=r"^age1[02-9ac-hj-np-z]{58}$")]


class SystemSettings(Group):
    enabled: bool = True
    timezone: TimeZoneName = "UTC"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    environment: Environment = Environment.development
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    replica_id: Annotated[str | None, BeforeValidator(_empty_as_none)] = None
    # A running job's replica renews its lease every second; a job whose lease has
    # lapsed this long is interrupted and retried by another replica.
    lease_seconds: float = Field(default=30.0, ge=2, le=3600)
    # Reverse proxies whose X-Forwarded-For / -Proto are believed (comma-separated
    # addresses, as uvicorn's forwarded_allow_ips). Empty: none, so a client cannot pick
    # the address that login throttling and the audit log see.
    trusted_proxies: Annotated[str | None, BeforeValidator(_empty_as_none)] = None


class CatalogSettings(Group):
    mongo_uri: SecretStr = SecretStr("mongodb://127.0.0.1:57017/")
    database: str = Field(default="backvault", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    # The service's own catalog database is backed up as a source of this name.
    source_name: Annotated[SourceName | None, BeforeValidator(_empty_as_none)] = "catalog"


class SourceSettings(Group):
    name: SourceName
    kind: SourceKind
    uri: SecretStr
    database: str | None = None
    enabled: bool = True
    # Storage targets each backup of this source is copied to after it is written.
    copy_targets: list[str] = []

    @model_validator(mode="after")
    def _uri_matches_kind(self) -> "SourceSettings":
        scheme = urlsplit(self.uri.get_secret_value()).scheme
        allowed = {
            SourceKind.postgres: {"postgres", "postgresql"},
            SourceKind.mongodb: {"mongodb", "mongodb+srv"},
        }[self.kind]
        if scheme not in allowed:
            raise ValueError(f"source {self.name!r}: a {self.kind} URI must start with "
                             f"{' or '.join(sorted(s + '://' for s in allowed))}")
        return self

    def database_name(self) -> str:
        """The database to back up: explicit, else the URI's path."""
        if self.database:
            return self.database
        path = urlsplit(self.uri.get_secret_value()).path.lstrip("/")
        return path or ("postgres" if self.kind is SourceKind.postgres else "test")


class ToolSettings(Group):
    # pg_dump must be at least the server's major version.
    pg_bin_dir: Annotated[Path | None, BeforeValidator(_empty_as_none)] = None


class StorageBackend(StrEnum):
    local = "local"
    s3 = "s3"


TargetName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class S3Fields(Group):
    """Where and how an S3 target is reached."""

    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_endpoint_url: Annotated[HttpUrl | None, BeforeValidator(_empty_as_none)] = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_prefix: str = "backvault"


class StorageTargetSettings(S3Fields):
    """One named place backups are written to or copied to."""

    name: TargetName
    kind: StorageBackend
    local_dir: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> "StorageTargetSettings":
        if self.kind is StorageBackend.s3 and not self.s3_bucket:
            raise ValueError(f"storage target {self.name!r} (s3) needs s3_bucket")
        if self.kind is StorageBackend.local and self.local_dir is None:
            raise ValueError(f"storage target {self.name!r} (local) needs local_dir")
        return self


class StorageSettings(S3Fields):
    # Named targets (JSON list); empty: the single backend below is one target named
    # after it ("local" or "s3"), which is also what records without a target map to.
    targets: list[StorageTargetSettings] = []
    default_target: Annotated[TargetName | None, BeforeValidator(_empty_as_none)] = None
    # Transient storage errors (timeouts, resets, 5xx, SlowDown) are retried this often.
    retries: int = Field(default=4, ge=0, le=20)
    retry_base_seconds: float = Field(default=0.5, gt=0, le=60)
    backend: StorageBackend = StorageBackend.local
    local_dir: Path = Path("./backups")
    # Restores spool here (pg_restore -j needs a seekable file); backups never do.
    spool_dir: Annotated[Path | None, BeforeValidator(_empty_as_none)] = None

    @model_validator(mode="after")
    def _s3_complete(self) -> "StorageSettings":
        if self.backend is StorageBackend.s3 and not self.s3_bucket and not self.targets:
            raise ValueError("storage.backend is s3 but storage.s3_bucket is not set")
        names = [t.name for t in self.targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"storage target names must be unique: {', '.join(duplicates)}")
        if self.default_target and self.default_target not in self.target_names():
            raise ValueError(f"storage.default_target {self.default_target!r} is not a "
                             f"configured target ({', '.join(self.target_names())})")
        return self

    def target_list(self) -> list[StorageTargetSettings]:
        """The configured targets, or the legacy single backend as one target."""
        if self.targets:
            return list(self.targets)
        backend = StorageBackend(self.backend)  # model_copy may have set a plain string
        return [StorageTargetSettings(
            name=backend.value, kind=backend, local_dir=self.local_dir,
            s3_bucket=self.s3_bucket, s3_region=self.s3_region,
            s3_endpoint_url=self.s3_endpoint_url, s3_access_key=self.s3_access_key,
            s3_secret_key=self.s3_secret_key, s3_prefix=self.s3_prefix)]

    def target_names(self) -> list[str]:
        return [t.name for t in self.target_list()]

    @property
    def default_name(self) -> str:
        return self.default_target or self.target_list()[0].name


class CompressionAlgorithm(StrEnum):
    zstd = "zstd"
    gzip = "gzip"
    none = "none"


DEFAULT_LEVEL = {CompressionAlgorithm.zstd: 2, CompressionAlgorithm.gzip: 6,
                 CompressionAlgorithm.none: 0}


class CompressionSettings(Group):
    algorithm: CompressionAlgorithm = CompressionAlgorithm.zstd
    # Empty: zstd 2 (not zstd's usual 3: a third less CPU for 2% less ratio, still better
    # than gzip -6, see bench/; on a small machine compression is what a backup waits for),
    # gzip 6.
    level: Annotated[int | None, BeforeValidator(_empty_as_none)] = None
    threads: int = Field(default=0, ge=-1, le=64,
                         description="zstd workers; 0 = one per core, -1 = none")

    @property
    def chosen_level(self) -> int:
        return DEFAULT_LEVEL[self.algorithm] if self.level is None else self.level

    @model_validator(mode="after")
    def _level_in_range(self) -> "CompressionSettings":
        bounds = {CompressionAlgorithm.zstd: (1, 22), CompressionAlgorithm.gzip: (1, 9),
                  CompressionAlgorithm.none: (0, 22)}[self.algorithm]
        if not bounds[0] <= self.chosen_level <= bounds[1]:
            raise ValueError(f"compression level for {self.algorithm} must be between "
                             f"{bounds[0]} and {bounds[1]}")
        return self


class EncryptionSettings(Group):
    # Public keys only: backing up never needs the secret identity.
    recipients: list[AgeRecipient] = []
    identity_file: Annotated[Path | None, BeforeValidator(_empty_as_none)] = None

    @property
    def enabled(self) -> bool:
        return bool(self.recipients)


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
                              BeforeValidator(_empty_as_none)] = None


class ContentSourceKind(StrEnum):
    mongo_query = "mongo_query"  # a field of the documents of an application collection
    static = "static"  # a fixed list
    kubo_pins = "kubo_pins"  # the recursive pins of a Kubo node


class ContentType(StrEnum):
    ipfs = "ipfs"
    gaia = "gaia"


class ContentSourceSettings(Group):
    name: SourceName
    kind: ContentSourceKind
    type: ContentType = ContentType.ipfs
    # mongo_query: a configured MongoDB source, its collection, a filter and the field
    # (dotted path) that holds a CID or a Gaia URL (or a list of them).
    mongo_source: str | None = None
    collection: str | None = None
    field: str | None = None
    filter: dict[str, Any] = {}
    items: list[str] = []  # static: CIDs, or Gaia URLs / "address/path"
    kubo_api: Annotated[HttpUrl | None, BeforeValidator(_empty_as_none)] = None

    @model_validator(mode="after")
    def _complete(self) -> "ContentSourceSettings":
        needed = {ContentSourceKind.mongo_query: ("mongo_source", "collection", "field"),
                  ContentSourceKind.static: ("items",),
                  ContentSourceKind.kubo_pins: ("kubo_api",)}[self.kind]
        missing = [name for name in needed if not getattr(self, name)]
        if missing:
            raise ValueError(f"content source {self.name!r} ({self.kind}) needs "
                             + ", ".join(missing))
        if self.kind is ContentSourceKind.kubo_pins and self.type is not ContentType.ipfs:
            raise ValueError(f"content source {self.name!r}: Kubo pins are IPFS content")
        return self


class ContentSettings(Group):
    enabled: bool = True
    sources: list[ContentSourceSettings] = []
    concurrency: int = Field(default=3, ge=1, le=64)
    timeout_seconds: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    max_file_size: int = Field(default=100 * 1024 * 1024, ge=1)
    ipfs_gateways: list[HttpUrl] = []
    gaia_hubs: list[HttpUrl] = []
    # Where re-imported IPFS content goes (Kubo RPC API); empty: no re-import.
    kubo_api: Annotated[HttpUrl | None, BeforeValidator(_empty_as_none)] = None


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


PLACEHOLDER = re.compile(r"^(change[-_]?me|your[-_]|placeholder|example|secret$|password$)",
                         re.IGNORECASE)


def is_placeholder(secret: SecretStr | None) -> bool:
    return secret is not None and bool(PLACEHOLDER.match(secret.get_secret_value()))


class Settings(BaseSettings):
    """Every setting of the service, grouped as in `.env.example`."""

    model_config = SettingsConfigDict(
        env_prefix="BACKUP_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    system: SystemSettings = SystemSettings()
    catalog: CatalogSettings = CatalogSettings()
    sources: list[SourceSettings] = []
    tools: ToolSettings = ToolSettings()
    storage: StorageSettings = StorageSettings()
    compression: CompressionSettings = CompressionSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    schedules: ScheduleSettings = ScheduleSettings()
    retention: RetentionSettings = RetentionSettings()
    limits: LimitSettings = LimitSettings()
    content: ContentSettings = ContentSettings()
    notifications: NotificationSettings = NotificationSettings()
    auth: AuthSettings = AuthSettings()
    http: HttpSettings = HttpSettings()
    login: LoginSettings = LoginSettings()
    audit: AuditSettings = AuditSettings()

    @model_validator(mode="after")
    def _checks(self) -> "Settings":
        # Backups are listed by source name, so database and content names share a space.
        names = [s.name for s in self.sources] + [s.name for s in self.content.sources]
        if self.catalog.source_name:
            names.append(self.catalog.source_name)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique: {', '.join(duplicates)}")
        for source in self.content.sources:
            if source.kind is ContentSourceKind.mongo_query and not any(
                    s.name == source.mongo_source and s.kind is SourceKind.mongodb
                    for s in self.all_sources()):
                raise ValueError(f"content source {source.name!r}: mongo_source "
                                 f"{source.mongo_source!r} is not a configured MongoDB source")
        targets = set(self.storage.target_names())
        for src in self.sources:
            unknown = [t for t in src.copy_targets if t not in targets]
            if unknown:
                raise ValueError(f"source {src.name!r}: copy_targets {', '.join(unknown)} "
                                 f"are not configured storage targets")
        if self.system.environment is not Environment.development:
            self._refuse_placeholders()
        return self

    def _refuse_placeholders(self) -> None:
        named: dict[str, SecretStr | None] = {
            "BACKUP_AUTH__JWT_SECRET": self.auth.jwt_secret,
            "BACKUP_AUTH__BOOTSTRAP_PASSWORD": self.auth.bootstrap_password,
            "BACKUP_STORAGE__S3_ACCESS_KEY": self.storage.s3_access_key,
            "BACKUP_STORAGE__S3_SECRET_KEY": self.storage.s3_secret_key,
        }
        for target in self.storage.targets:
            named[f"BACKUP_STORAGE__TARGETS ({target.name}) s3_access_key"] = target.s3_access_key
            named[f"BACKUP_STORAGE__TARGETS ({target.name}) s3_secret_key"] = target.s3_secret_key
        bad = [name for name, value in named.items() if is_placeholder(value)]
        if len(self.auth.jwt_secret.get_secret_value()) < 32:
            bad.append("BACKUP_AUTH__JWT_SECRET (needs at least 32 characters)")
        if bad:
            raise ValueError(
                f"placeholder or weak secrets are refused in {self.system.environment} mode: "
                + ", ".join(bad)
            )

    def all_sources(self) -> list[SourceSettings]:
        """Configured sources plus the service's own catalog database."""
        sources = list(self.sources)
        if self.catalog.source_name:
            sources.append(SourceSettings(
                name=self.catalog.source_name, kind=SourceKind.mongodb,
                uri=self.catalog.mongo_uri, database=self.catalog.database,
            ))
        return sources

    def source(self, name: str) -> SourceSettings | None:
        return next((s for s in self.all_sources() if s.name == name), None)

    def content_source(self, name: str) -> ContentSourceSettings | None:
        return next((s for s in self.content.sources if s.name == name), None)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def public_view(value: Any) -> Any:
    """Settings as JSON-ready data with every secret replaced by a marker."""
    if isinstance(value, SecretStr):
        return "<redacted>" if value.get_secret_value() else None
    if isinstance(value, BaseModel):
        return {name: public_view(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list):
        return [public_view(v) for v in value]
    if isinstance(value, Path | HttpUrl):
        return str(value)
    return value
