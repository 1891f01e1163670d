"""Settings: the only place the environment is read (prefix BACKUP_, groups split by `__`)."""

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    HttpUrl,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config.common import Environment, without_userinfo
from app.config.managed import SourceStoreSettings, managed_sources
from app.config.pitr import PitrSettings
from app.config.recoverability import DrillSettings, VerificationSettings
from app.config.service import (
    AuditSettings,
    AuthSettings,
    HttpSettings,
    LimitSettings,
    LoginSettings,
    NotificationSettings,
    RetentionSettings,
    ScheduleSettings,
    SystemSettings,
    ToolSettings,
)
from app.config.sources import (
    CatalogSettings,
    ContentSettings,
    ContentSourceKind,
    ContentSourceSettings,
    SourceKind,
    SourceSettings,
)
from app.config.storage import CompressionSettings, EncryptionSettings, StorageSettings

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
        # A validation error must not print the input: it holds URIs, keys and tokens.
        hide_input_in_errors=True,
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
    pitr: PitrSettings = PitrSettings()
    source_store: SourceStoreSettings = SourceStoreSettings()
    verification: VerificationSettings = VerificationSettings()
    drills: DrillSettings = DrillSettings()

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
                    s.name == source.mongo_source and s.kind == "mongodb"
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
            named[f"BACKUP_STORAGE__TARGETS ({target.name}) sftp_password"] = target.sftp_password
            named[f"BACKUP_STORAGE__TARGETS ({target.name}) sftp_private_key_passphrase"] = \
                target.sftp_private_key_passphrase
        bad = [name for name, value in named.items() if is_placeholder(value)]
        if len(self.auth.jwt_secret.get_secret_value()) < 32:
            bad.append("BACKUP_AUTH__JWT_SECRET (needs at least 32 characters)")
        if bad:
            raise ValueError(
                f"placeholder or weak secrets are refused in {self.system.environment} mode: "
                + ", ".join(bad)
            )

    def all_sources(self) -> list[SourceSettings]:
        """Configured sources, the service's own catalog database, then the sources added
        at runtime (an environment name always wins)."""
        sources = list(self.sources)
        if self.catalog.source_name:
            sources.append(SourceSettings(
                name=self.catalog.source_name, kind=SourceKind("mongodb"),
                uri=self.catalog.mongo_uri, database=self.catalog.database,
            ))
        taken = {s.name for s in sources} | {s.name for s in self.content.sources}
        sources.extend(s for s in managed_sources(self.catalog.database) if s.name not in taken)
        return sources

    def environment_source_names(self) -> set[str]:
        """Sources that come from the environment (read-only at runtime)."""
        names = {s.name for s in self.sources} | {s.name for s in self.content.sources}
        return names | ({self.catalog.source_name} if self.catalog.source_name else set())

    def enabled_database_sources(self) -> list[str]:
        """What "every database source" means: the enabled ones, the catalog included."""
        return [s.name for s in self.all_sources() if s.enabled]

    def content_source_names(self) -> list[str]:
        """What "every content source" means: none while content backups are off."""
        return [s.name for s in self.content.sources] if self.content.enabled else []

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
    if isinstance(value, HttpUrl):
        return without_userinfo(str(value))
    if isinstance(value, Path):
        return str(value)
    return value
