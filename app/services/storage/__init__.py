"""Where artifacts live: one small Protocol, a local directory and S3, wrappers that
retry and throttle, and the named targets backups are written to and read from."""

from app.config import Settings
from app.services.storage.base import ObjectInfo, Storage, StorageError
from app.services.storage.local import LocalStorage
from app.services.storage.targets import StorageTargets, Targets, as_targets


def targets_from_settings(settings: Settings) -> StorageTargets:
    return StorageTargets.from_settings(settings)


__all__ = ["LocalStorage", "ObjectInfo", "Storage", "StorageError", "StorageTargets",
           "Targets", "as_targets", "targets_from_settings"]
