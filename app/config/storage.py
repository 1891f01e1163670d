"""Where and how artifacts are written: storage targets, compression, encryption."""

import re
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

from app.config.cloud_storage import HIDE_INPUT, check_azure_target, check_gcs_target
from app.config.common import AgeRecipient, Group, empty_as_none


class StorageBackend(StrEnum):
    local = "local"
    s3 = "s3"
    azure = "azure"
    gcs = "gcs"
    sftp = "sftp"


# A public host key in a known_hosts or ssh-keyscan line: its type, then base64.
SSH_HOST_KEY = re.compile(r"(?:^|\s)(?:ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)"
                          r"\s+AAAA[A-Za-z0-9+/]+=*(?:\s|$)")
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

    # Its errors never echo the input: that holds keys, tokens and passwords.
    model_config = HIDE_INPUT
    name: TargetName
    kind: StorageBackend
    local_dir: Path | None = None
    # azure: https://<account>.blob.core.windows.net (or an emulator's URL) and a
    # container; an account key or a SAS token (with read/add/create/write/delete/list).
    azure_account_url: Annotated[HttpUrl | None, BeforeValidator(empty_as_none)] = None
    azure_container: str | None = None
    azure_account_key: SecretStr | None = None
    azure_sas_token: SecretStr | None = None
    azure_prefix: str = "backvault"
    # Blocks a put sends at once; it holds (this + 1) blocks of 8 MiB (more when
    # limits.max_size_mb needs bigger blocks to fit Azure's 50,000).
    azure_blocks_in_flight: int = Field(default=2, ge=1, le=16)
    # gcs: a bucket and a service account's JSON key; gcs_endpoint_url only for an
    # emulator or a private endpoint (without credentials there: no auth at all).
    gcs_bucket: str | None = None
    gcs_credentials_json: SecretStr | None = None
    gcs_endpoint_url: Annotated[HttpUrl | None, BeforeValidator(empty_as_none)] = None
    gcs_prefix: str = "backvault"
    # sftp: a directory on a host reached over SSH. The host key is pinned (a line as
    # ssh-keyscan prints it), never learned; a key (with its passphrase if it has one) or
    # a password logs in.
    sftp_host: str | None = None
    sftp_port: int = Field(default=22, ge=1, le=65535)
    sftp_user: str | None = None
    sftp_password: SecretStr | None = None
    sftp_private_key: SecretStr | None = None
    sftp_private_key_passphrase: SecretStr | None = None
    sftp_known_host: Annotated[str | None, BeforeValidator(empty_as_none)] = None
    sftp_dir: str | None = None

    @model_validator(mode="after")
    def _sftp_complete(self) -> "StorageTargetSettings":
        if self.kind is not StorageBackend.sftp:
            return self
        needs = [f for f in ("sftp_host", "sftp_user", "sftp_known_host", "sftp_dir")
                 if not getattr(self, f)]
        if not self.sftp_password and not self.sftp_private_key:
            needs.append("sftp_private_key or sftp_password")
        if needs:
            raise ValueError(f"storage target {self.name!r} (sftp) needs {', '.join(needs)}")
        if self.sftp_private_key_passphrase and not self.sftp_private_key:
            raise ValueError(f"storage target {self.name!r} (sftp): "
                             "sftp_private_key_passphrase without sftp_private_key")
        if not SSH_HOST_KEY.search(str(self.sftp_known_host)):
            raise ValueError(f"storage target {self.name!r} (sftp): sftp_known_host must hold "
                             "the server's public host key, as ssh-keyscan prints it")
        return self

    @model_validator(mode="after")
    def _complete(self) -> "StorageTargetSettings":
        if self.kind is StorageBackend.s3 and not self.s3_bucket:
            raise ValueError(f"storage target {self.name!r} (s3) needs s3_bucket")
        if self.kind is StorageBackend.local and self.local_dir is None:
            raise ValueError(f"storage target {self.name!r} (local) needs local_dir")
        if self.kind is StorageBackend.azure:
            check_azure_target(self.name, self)
        if self.kind is StorageBackend.gcs:
            check_gcs_target(self.name, self)
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
    def _sftp_is_a_named_target(self) -> "StorageSettings":
        if self.backend is StorageBackend.sftp and not self.targets:
            raise ValueError("storage.backend sftp is configured as a named target in "
                             "storage.targets (kind sftp)")
        return self

    @model_validator(mode="after")
    def _cloud_is_a_named_target(self) -> "StorageSettings":
        if self.backend in (StorageBackend.azure, StorageBackend.gcs) and not self.targets:
            raise ValueError(f"storage.backend {self.backend.value} is configured as a named "
                             f"target in storage.targets (kind {self.backend.value})")
        return self

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
