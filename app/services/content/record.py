"""Catalog records of content backups: the stored objects (looked up and added in bulk),
the Backup record, and the manifest that lists a backup's items."""

import json
import time
from dataclasses import dataclass, field
from typing import Any

from beanie import PydanticObjectId
from pymongo.errors import BulkWriteError

from app.config import ContentSourceSettings, Settings
from app.models.backup import Backup, BackupKind, BackupStatus, BackupType, ContentEntry
from app.models.common import utcnow
from app.models.content import ContentBackupCreate, ContentItem, ContentObject, ItemStatus
from app.services.artifacts.stages import Digest, from_bytes
from app.services.catalog.queries import update_backup
from app.services.content.located import readable
from app.services.databases.backup import MB
from app.services.storage import Storage, StorageTargets

ERROR_SAMPLE = 5
LOOKUP_BATCH = 500
DUPLICATE_KEY = 11000


@dataclass
class StoredObjects:
    """Objects already stored (looked up in bulk) and the ones a run stores; the new ones
    are recorded together once the items are done.

    An object whose target is no longer configured counts as not stored: it is fetched
    again to the default target and its record then points there."""

    targets: StorageTargets
    known: dict[str, ContentObject] = field(default_factory=dict)
    new: dict[str, ContentObject] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)

    def _keep(self, obj: ContentObject) -> bool:
        if readable(self.targets, obj):
            self.known[obj.address] = obj
            return True
        self.stale.add(obj.address)
        return False

    async def preload(self, addresses: list[str]) -> None:
        """Look up which addresses are stored, in bulk, and mark them as in use now
        (before anything references them, so retention's grace period covers them)."""
        for start in range(0, len(addresses), LOOKUP_BATCH):
            batch = addresses[start:start + LOOKUP_BATCH]
            async for obj in ContentObject.find({"_id": {"$in": batch}}):
                self._keep(obj)
        await ContentObject.get_pymongo_collection().update_many(
            {"_id": {"$in": list(self.known)}}, {"$set": {"lastUsedAt": utcnow()}})

    async def stored(self, address: str) -> ContentObject | None:
        """The stored object at address (marked as in use now), or None."""
        if address in self.stale:
            return None
        if address not in self.known:
            found = await ContentObject.get(address)
            if found is None or not self._keep(found):
                return None
            await ContentObject.get_pymongo_collection().update_one(
                {"_id": address}, {"$set": {"lastUsedAt": utcnow()}})
        return self.known[address]

    async def record_new(self) -> None:
        """Add the objects this run stored to the catalog."""
        if not self.new:
            return
        try:
            await ContentObject.insert_many(list(self.new.values()), ordered=False)
        except BulkWriteError as exc:
            # Another backup stored the same content (at the same key) meanwhile.
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
        for address in self.stale & set(self.new):  # fetched again: now on the default
            await self.new[address].save()


async def new_backup(settings: Settings, targets: StorageTargets, source: ContentSourceSettings,
                     body: ContentBackupCreate, admin: PydanticObjectId,
                     backup_type: BackupType, job_id: PydanticObjectId | None) -> Backup:
    """The pending Backup record of a content backup, inserted."""
    created, backup_id = utcnow(), PydanticObjectId()
    backup = Backup(id=backup_id, created_at=created, admin=admin, type=backup_type,
                    source=source.name, kind=BackupKind.content, job_id=job_id,
                    retention_days=body.retention_days or settings.retention.days,
                    notes=body.notes, storage_backend=targets.default.name,
                    storage_target=targets.recorded_name(targets.default_name),
                    format_chain=["json"],
                    storage_key=f"content/backups/{source.name}/{created:%Y/%m/%d}/"
                                f"{backup_id}.manifest.json",
                    options={"contentSource": source.name, "type": source.type.value})
    backup.manifest_key = backup.storage_key
    await backup.insert()
    return backup


def object_entry(obj: ContentObject) -> dict[str, Any]:
    """One stored object as a manifest lists it (what a catalog rebuild recreates)."""
    entry = obj.model_dump(mode="json", by_alias=True, exclude={"id", "last_used_at"})
    return {"address": obj.address, **entry}


async def referenced_objects(items: list[ContentItem]) -> list[ContentObject]:
    """The catalog records of every object the items reference, in batches."""
    addresses = list(dict.fromkeys(a for i in items for a in i.objects))
    found: list[ContentObject] = []
    for start in range(0, len(addresses), LOOKUP_BATCH):
        batch = addresses[start:start + LOOKUP_BATCH]
        found += await ContentObject.find({"_id": {"$in": batch}}).to_list()
    return found


def manifest_bytes(backup: Backup, items: list[ContentItem], counts: dict[str, int],
                   objects: list[ContentObject] | None = None) -> bytes:
    """The manifest of a content backup: its items and where their objects live."""
    return json.dumps({
        "manifestVersion": 1, "backupId": str(backup.id), "source": backup.source,
        "kind": "content", "createdAt": backup.created_at.isoformat(), "counts": counts,
        # What a catalog rebuild needs besides the items (absent from older manifests).
        "type": backup.type.value, "admin": str(backup.admin) if backup.admin else None,
        "retentionDays": backup.retention_days, "notes": backup.notes,
        "options": backup.options,
        "storageTarget": backup.storage_target or backup.storage_backend,
        "objects": [object_entry(o) for o in objects or []],
        "note": "Objects live under content/ by address; IPFS objects are CAR files "
                "(ipfs dag import), Gaia objects the file bytes; each may be zstd-"
                "compressed and age-encrypted as its suffix says.",
        "items": [i.model_dump(mode="json", by_alias=True,
                               exclude={"id", "revision_id", "backup_id"}) for i in items],
    }, indent=1).encode()


def _error(items: list[ContentItem]) -> str | None:
    failed = [i for i in items if i.status is ItemStatus.failed]
    if not failed:
        return None
    sample = "; ".join(f"{i.reference[:80]}: {i.error}" for i in failed[:ERROR_SAMPLE])
    return f"partial: {len(failed)} of {len(items)} items failed: {sample}"


async def record_backup(storage: Storage, backup: Backup, items: list[ContentItem],
                        new_bytes: int, started: float) -> dict[str, int]:
    """Write the manifest of the (recorded) items, then complete the Backup record, or fail
    it when every item failed; returns the item counts by status."""
    counts = {s.value: sum(i.status is s for i in items) for s in ItemStatus}
    digest = Digest()
    assert backup.storage_key is not None
    objects = await referenced_objects(items)
    stored = await storage.put(backup.storage_key, digest.tap(from_bytes(
        manifest_bytes(backup, items, counts, objects))))
    all_failed = bool(items) and counts[ItemStatus.failed.value] == len(items)
    await update_backup(
        backup, only_if={"status": BackupStatus.pending.value},
        status=BackupStatus.failed if all_failed else BackupStatus.completed,
        error=_error(items), sha256=digest.hexdigest, stored_bytes=stored,
        size_mb=round((new_bytes + stored) / MB, 6),
        plaintext_bytes=sum(i.size or 0 for i in items),
        duration_ms=int((time.monotonic() - started) * 1000),
        contents=[ContentEntry(name=name, count=count) for name, count in counts.items()])
    return counts
