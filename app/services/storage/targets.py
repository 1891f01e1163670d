"""Named storage targets (one the default): which storage each backup is read from."""

from typing import TYPE_CHECKING

import structlog

from app.config import Settings, StorageBackend, StorageTargetSettings
from app.errors import AppError, InvalidInputError
from app.services.storage.base import Storage
from app.services.storage.local import LocalStorage
from app.services.storage.wrappers import (
    RetryingStorage,
    ThrottledStorage,
    backend_of,
    is_throttled,
)

if TYPE_CHECKING:
    from app.models.backup import Backup

log = structlog.get_logger(__name__)
MB = 1024 * 1024


class UnknownTargetError(AppError):
    """A backup names a storage target that is not configured: configuration, not damage."""

    status_code = 409
    code = "unknown_storage_target"


def wrapped(backend: Storage, settings: Settings) -> Storage:
    """Retries (inner) and the bandwidth cap (outer) around a backend."""
    storage: Storage = RetryingStorage(backend, settings.storage.retries,
                                       settings.storage.retry_base_seconds)
    if settings.limits.bandwidth_mbps:
        storage = ThrottledStorage(storage, settings.limits.bandwidth_mbps * MB)
    return storage


def build_target(target: StorageTargetSettings, settings: Settings) -> Storage:
    if target.kind is StorageBackend.s3:
        # Imported here: the S3 stack costs a second of start-up where it is not used.
        from app.services.storage.s3 import S3Storage

        return wrapped(S3Storage.from_target(target, settings), settings)
    if target.kind is StorageBackend.azure:
        from app.services.storage.azure import AzureBlobStorage

        return wrapped(AzureBlobStorage.from_target(target, settings), settings)
    if target.kind is StorageBackend.gcs:
        from app.services.storage.gcs import GcsStorage

        return wrapped(GcsStorage.from_target(target, settings), settings)
    if target.kind is StorageBackend.sftp:
        from app.services.storage.sftp import SftpStorage

        return wrapped(SftpStorage.from_target(target), settings)
    assert target.local_dir is not None
    return wrapped(LocalStorage(target.local_dir), settings)


class StorageTargets:
    """Every configured target by name. `lenient`: one storage handed in directly (tests,
    older callers) serves every backup whose target is not otherwise known."""

    def __init__(self, settings: Settings, stores: dict[str, Storage], default: str,
                 lenient: bool = False) -> None:
        self.settings = settings
        self.stores = stores
        self.default_name = default
        self.lenient = lenient

    @classmethod
    def from_settings(cls, settings: Settings) -> "StorageTargets":
        stores = {t.name: build_target(t, settings) for t in settings.storage.target_list()}
        return cls(settings, stores, settings.storage.default_name)

    async def prepare(self) -> None:
        """The default must be usable; another target that is not yet only warns (its
        copies and reads fail, and say so, until it is)."""
        await self.default.prepare()
        for name, store in self.stores.items():
            if name != self.default_name:
                try:
                    await store.prepare()
                except AppError as exc:
                    log.warning("storage target not ready", target=name, error=exc.message)

    @property
    def explicit(self) -> bool:
        """Named targets are configured: new records name theirs. Otherwise they name only
        the backend, as before, so they keep mapping to it when targets are added later."""
        return bool(self.settings.storage.targets) and not self.lenient

    def recorded_name(self, name: str) -> str | None:
        return name if self.explicit else None

    @property
    def default(self) -> Storage:
        return self.stores[self.default_name]

    def names(self) -> list[str]:
        return list(self.stores)

    def kind_of(self, name: str) -> str:
        return self.stores[name].name

    def named(self, name: str | None) -> Storage:
        """A target by name (None: the default); unknown names are a 422."""
        if name is None:
            return self.default
        if name not in self.stores and self.lenient:
            self._add_configured(name)
        if name not in self.stores:
            raise InvalidInputError(
                f"Unknown storage target {name!r} (configured: {', '.join(self.stores)})",
                [{"field": "target", "message": "unknown storage target"}])
        return self.stores[name]

    def _add_configured(self, name: str) -> None:
        for target in self.settings.storage.target_list():
            if target.name == name:
                self.stores[name] = build_target(target, self.settings)

    def resolve(self, target: str | None, backend: str | None, what: str,
                details: dict[str, str]) -> str:
        """The name of the target a record (`what`) was written to. Older records name only
        their backend, which maps to the target of that name, else the one target of that
        kind; a record naming neither maps to the default."""
        wanted = target or backend or self.default_name
        if wanted not in self.stores and self.lenient:
            self._add_configured(wanted)
        if wanted in self.stores:
            return wanted
        if self.lenient:
            return self.default_name
        if target is None:
            kinds = [n for n, s in self.stores.items() if s.name == wanted]
            if self.default.name == wanted:
                return self.default_name
            if len(kinds) == 1:
                return kinds[0]
        raise UnknownTargetError(
            f"{what} was written to storage target {wanted!r}, which is not configured "
            f"(configured: {', '.join(self.stores)}). Configure it in "
            "BACKUP_STORAGE__TARGETS; the record is not marked failed",
            {**details, "target": wanted})

    def name_for(self, backup: "Backup") -> str:
        return self.resolve(backup.storage_target, backup.storage_backend,
                            f"Backup {backup.id}", {"backupId": str(backup.id)})

    def for_backup(self, backup: "Backup") -> Storage:
        return self.stores[self.name_for(backup)]

    async def close(self) -> None:
        """Close the backends that hold connections (SFTP), under their wrappers."""
        for store in self.stores.values():
            backend = backend_of(store)
            close = getattr(backend, "close", None)
            if close is not None:
                await close()

    def for_copy(self, name: str) -> Storage | None:
        """A copy's target, or None when it is not configured."""
        try:
            return self.named(name)
        except InvalidInputError:
            return None


Targets = Storage | StorageTargets


def as_targets(settings: Settings, storage: Targets) -> StorageTargets:
    """Targets as they are, or one storage handed in directly made the lenient default
    (with the bandwidth cap, if it has none)."""
    if isinstance(storage, StorageTargets):
        return storage
    if settings.limits.bandwidth_mbps and not is_throttled(storage):
        storage = ThrottledStorage(storage, settings.limits.bandwidth_mbps * MB)
    return StorageTargets(settings, {storage.name: storage}, storage.name, lenient=True)
