"""Backups that prove themselves: the verification policy and restore drills."""

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from app.config.common import Crontab, Group, SourceName, empty_as_none


class VerificationSettings(Group):
    # Verify each new database backup right after it is written.
    after_backup: bool = True
    # Read encrypted backups through (decrypt, decompress, parse) when the identity is
    # configured; off: size and SHA-256 only (unencrypted ones are always read through).
    deep_after_backup: bool = True
    # Every kept backup is re-read at least this often by the rolling re-verification.
    reverify_days: int = Field(default=30, ge=1, le=3650)
    # Each run also re-reads this fraction of the kept backups (oldest checked first),
    # so the work is spread instead of arriving all on the day backups fall due.
    sample_fraction: float = Field(default=0.05, ge=0, le=1)
    schedule: Crontab = "30 4 * * *"


class SourceCheck(Group):
    """A check run on the restored scratch database: a number at least `minimum`.

    PostgreSQL: `sql` returns one number; `$1` in it is the backup's time (`$1::timestamptz`).
    MongoDB: documents of `collection` matching `filter`, and when `time_field` is set,
    whose time lies in the `within_days` before the backup."""

    name: str = Field(min_length=1, max_length=100)
    sql: str | None = None
    collection: str | None = None
    filter: dict[str, Any] = {}
    time_field: str | None = None
    within_days: float | None = Field(default=None, gt=0)
    minimum: float = 1

    @model_validator(mode="after")
    def _one_kind(self) -> "SourceCheck":
        if (self.sql is None) == (self.collection is None):
            raise ValueError(f"check {self.name!r}: give either sql or collection")
        if (self.time_field is None) != (self.within_days is None):
            raise ValueError(f"check {self.name!r}: time_field and within_days go together")
        return self


class DrillSourceSettings(Group):
    """What differs for one source's drills."""

    source: SourceName
    enabled: bool = True
    # The server the scratch database is made on (same kind); default the source's own.
    uri: Annotated[SecretStr | None, BeforeValidator(empty_as_none)] = None
    rto_target_seconds: float | None = Field(default=None, gt=0)
    checks: list[SourceCheck] = []


class DrillSettings(Group):
    enabled: bool = True
    schedule: Crontab = "0 4 * * 6"  # weekly, Saturday 04:00
    # Scratch databases are named prefix + source + time; nothing else is ever touched.
    prefix: str = Field(default="bv_drill_", min_length=1, max_length=20,
                        pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    keep_failed: bool = False
    rto_target_seconds: Annotated[Annotated[float, Field(gt=0)] | None,
                                  BeforeValidator(empty_as_none)] = None
    sources: list[DrillSourceSettings] = []
    # How many stored objects a content source's drill re-hashes.
    content_sample: int = Field(default=20, ge=1, le=10_000)
    # How many recent RTOs the drill list shows per source.
    trend: int = Field(default=10, ge=1, le=100)

    def for_source(self, name: str) -> DrillSourceSettings:
        found = next((s for s in self.sources if s.source == name), None)
        return found or DrillSourceSettings(source=name)

    def rto_target(self, name: str) -> float | None:
        return self.for_source(name).rto_target_seconds or self.rto_target_seconds
