"""A backup's stored objects (artifact, manifest) as they are on storage, for download.

The primary target is read when it holds the object; otherwise the first copy that holds
it (with the recorded size, for the artifact) serves, so a lost primary still downloads.
"""

from dataclasses import dataclass
from pathlib import PurePosixPath

from app.errors import NotFoundError
from app.models.backup import Backup
from app.services.artifacts.read import require_artifact
from app.services.artifacts.stages import Chunks
from app.services.storage.base import ObjectInfo, Storage
from app.services.storage.copies import copy_by_size, primary_stat
from app.services.storage.targets import StorageTargets


@dataclass
class StoredObject:
    storage: Storage
    info: ObjectInfo
    target: str

    @property
    def filename(self) -> str:
        return PurePosixPath(self.info.key).name

    def chunks(self) -> Chunks:
        return self.storage.get(self.info.key)


def _fits(info: ObjectInfo | None, size: int | None) -> bool:
    return info is not None and (size is None or info.size == size)


async def stored_object(targets: StorageTargets, backup: Backup, key: str,
                        size: int | None = None) -> StoredObject:
    """Where `key` of this backup can be read now; NotFoundError when nowhere."""
    storage, info, problem = await primary_stat(targets, backup, key)
    if storage is not None and info is not None and _fits(info, size):
        return StoredObject(storage, info, targets.name_for(backup))
    found = await copy_by_size(targets, backup, key, size)
    if found is not None:
        return StoredObject(*found)
    why = problem or ("the primary object has another size than recorded" if info is not None
                      else "the object is missing from its storage target")
    raise NotFoundError(f"Backup {backup.id}: {why}, and no copy holds it",
                        {"backupId": str(backup.id), "key": key})


async def artifact_of(targets: StorageTargets, backup: Backup) -> StoredObject:
    """The stored artifact (still compressed and encrypted) of a completed backup."""
    return await stored_object(targets, backup, require_artifact(backup), backup.stored_bytes)


async def manifest_of(targets: StorageTargets, backup: Backup) -> StoredObject:
    """The manifest beside the artifact (a content backup's manifest is its object)."""
    if not backup.manifest_key:
        raise NotFoundError(f"Backup {backup.id} has no manifest ({backup.status.value})",
                            {"backupId": str(backup.id)})
    size = backup.stored_bytes if backup.manifest_key == backup.storage_key else None
    return await stored_object(targets, backup, backup.manifest_key, size)
