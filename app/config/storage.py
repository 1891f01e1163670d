"""Where and how artifacts are written: storage targets, compression, encryption."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import (
    BeforeValidator,
    Field,
    HttpUrl,
    SecretStr,
    model_validator,
)

from app.config.common import AgeRecipient, Group, empty_as_none


class StorageBackend(StrEnum):
    local = "local"
    s3 = "s3"


TargetName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class S3Fields(Group):
    """Where and how an S3 target is reached."""

    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_endpoint_url: Annotated[HttpUrl | None, BeforeValidator(empty_as_none)] = None
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
    default_target: Annotated[TargetName | None, BeforeValidator(empty_as_none)] = None
    # Transient storage errors (timeouts, resets, 5xx, SlowDown) are retried this often.
    retries: int = Field(default=4, ge=0, le=20)
    retry_base_seconds: float = Field(default=0.5, gt=0, le=60)
    backend: StorageBackend = StorageBackend.local
    local_dir: Path = Path("./backups")
    # Restores spool here (pg_restore -j needs a seekable file); backups never do.
    spool_dir: Annotated[Path | None, BeforeValidator(empty_as_none)] = None

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
    level: Annotated[int | None, BeforeValidator(empty_as_none)] = None
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
    identity_file: Annotated[Path | None, BeforeValidator(empty_as_none)] = None

    @property
    def enabled(self) -> bool:
        return bool(self.recipients)
