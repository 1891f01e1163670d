"""Where artifacts live: one small Protocol, a local directory and S3."""

from app.config import Settings, StorageBackend
from app.services.storage.base import ObjectInfo, Storage, StorageError
from app.services.storage.local import LocalStorage


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage.backend is StorageBackend.s3:
        # Imported here: the S3 stack costs a second of start-up where it is not used.
        from app.services.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage.local_dir)


__all__ = ["LocalStorage", "ObjectInfo", "Storage", "StorageError", "storage_from_settings"]
