"""Catalog rebuild from storage: every manifest on every storage target recreates its
backup record (and, for a content backup, its items and stored objects).

Idempotent: a backup already in the catalog is skipped, as is an object already recorded.
What manifests do not hold is not recreated: verification state and history, the trash
(a deleted backup whose files were still kept comes back as completed), restore marks,
jobs, schedules, users and the audit log. Content manifests written before they listed
their objects recreate the backup and its items but not the object records.
"""

import asyncio
import hashlib
import json
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from beanie import PydanticObjectId
from pydantic import Field, ValidationError
from pymongo.errors import DuplicateKeyError

from app.models.backup import Backup, BackupCopy, BackupKind, BackupStatus, ContentEntry
from app.models.common import ApiSchema
from app.models.content import ContentItem, ContentObject, ItemStatus
from app.models.job_params import CatalogRebuildParams, params_of
from app.services.access.auth import system_user_id
from app.services.databases.backup import MB
from app.services.jobs.runner import JobContext, Progress, error_text
from app.services.storage import Storage, StorageTargets

log = structlog.get_logger(__name__)
MANIFEST_SUFFIX = ".manifest.json"
CONTENT_PREFIX = "content/backups/"
# Manifests are small JSON; a bigger object under that name is not one of ours.
MAX_MANIFEST_BYTES = 256 * MB
# The manifest kind of a PITR base backup (app/services/pitr/manifest.py).
BASE_KIND = "postgres-base"
REPORT_LIMIT = 500  # entries listed per kind in the report (the counts are exact)


class RebuiltEntry(ApiSchema):
    id: str
    source: str | None
    kind: str | None
    target: str


class UnreadableEntry(ApiSchema):
    target: str
    key: str
    reason: str


class RebuildReport(ApiSchema):
    """What a rebuild recreated, found already present, and could not read."""

    dry_run: bool
    manifests: int = Field(description="manifests found on every target")
    recreated_count: int = 0
    skipped_count: int = 0
    unreadable_count: int = 0
    objects_recreated: int = 0
    items_recreated: int = 0
    recreated: list[RebuiltEntry] = []
    skipped: list[RebuiltEntry] = []
    unreadable: list[UnreadableEntry] = []

    def add(self, bucket: str, entry: RebuiltEntry | UnreadableEntry) -> None:
        setattr(self, f"{bucket}_count", getattr(self, f"{bucket}_count") + 1)
        listed: list[Any] = getattr(self, bucket)
        if len(listed) < REPORT_LIMIT:
            listed.append(entry)


class Unreadable(Exception):
    """A manifest that cannot be turned into a record; the message says why."""


@dataclass
class Found:
    """One database backup's manifest, and every target that holds it."""

    manifest: dict[str, Any]
    key: str
    targets: list[str] = field(default_factory=list)


async def read_manifest(storage: Storage, key: str) -> tuple[dict[str, Any], bytes]:
    chunks, size = [], 0
    async with aclosing(storage.get(key)) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_MANIFEST_BYTES:
                raise Unreadable("too large to be a manifest")
            chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        # A content manifest lists every item: parse it off the event loop.
        data = await asyncio.to_thread(json.loads, raw)
    except ValueError as exc:
        raise Unreadable(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Unreadable("not a JSON object")
    return data, raw


def _when(data: dict[str, Any], name: str) -> datetime:
    value = data.get(name)
    if not isinstance(value, str):
        raise Unreadable(f"no {name}")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise Unreadable(f"{name} is not a time: {value!r}") from exc


def _object_id(value: Any, name: str) -> PydanticObjectId:
    if not isinstance(value, str) or not PydanticObjectId.is_valid(value):
        raise Unreadable(f"{name} is not a backup id: {value!r}")
    return PydanticObjectId(value)


def _placed(targets: StorageTargets, name: str) -> dict[str, Any]:
    """Where a rebuilt record says it lives: the target it was found on."""
    return {"storage_target": targets.recorded_name(name),
            "storage_backend": targets.kind_of(name)}


async def _admin(value: Any) -> PydanticObjectId:
    if isinstance(value, str) and PydanticObjectId.is_valid(value):
        return PydanticObjectId(value)
    return await system_user_id()  # older manifests without one: the system account


def _primary(found: Found) -> str:
    """The target the backup was written to, when it holds the manifest; else the first."""
    wanted = found.manifest.get("storageTarget")
    return wanted if wanted in found.targets else found.targets[0]


async def database_backup(targets: StorageTargets, found: Found) -> Backup:
    """The completed Backup record a database manifest describes, its artifact checked."""
    data, primary = found.manifest, _primary(found)
    key, stored = data.get("storageKey"), data.get("storedBytes")
    if not isinstance(key, str) or not isinstance(stored, int):
        raise Unreadable("no storageKey or storedBytes")
    kind, options, notes = data.get("kind"), data.get("options") or {}, data.get("notes")
    if kind == BASE_KIND:  # a PITR base backup: a PostgreSQL record marked as such
        kind, options = "postgres", {"pitrBase": True, "pitr": data.get("pitr") or {}}
        notes = notes or "PITR base backup"
    copies = []
    for name in [primary, *(t for t in found.targets if t != primary)]:
        info = await targets.named(name).stat(key)
        if info is None or info.size != stored:
            if name == primary:
                raise Unreadable(f"artifact {key} is missing or not {stored} bytes on {name}")
            continue
        if name != primary:
            copies.append(BackupCopy(target=name, sha256=data.get("sha256"),
                                     stored_bytes=stored))
    try:
        return Backup(
            id=_object_id(data.get("id"), "id"), status=BackupStatus.completed,
            admin=await _admin(data.get("admin")), type=data.get("type") or "automatic",
            source=data.get("source"), kind=kind, database=data.get("database"),
            safety_for=(_object_id(data["safetyFor"], "safetyFor")
                        if data.get("safetyFor") else None),
            created_at=_when(data, "createdAt"), updated_at=_when(data, "completedAt"),
            duration_ms=data.get("durationMs"), retention_days=data.get("retentionDays") or 30,
            notes=notes, storage_key=key, manifest_key=found.key,
            format_chain=data.get("formatChain") or [], sha256=data.get("sha256"),
            stored_bytes=stored, size_mb=round(stored / MB, 6),
            plaintext_bytes=data.get("plaintextBytes"),
            encrypted=bool(data.get("encrypted")), recipients=data.get("recipients") or [],
            server_version=data.get("serverVersion"), tool_version=data.get("toolVersion"),
            options=options, error=data.get("error"), copies=copies,
            contents=[ContentEntry.model_validate(c) for c in data.get("contents") or []],
            **_placed(targets, primary))
    except ValidationError as exc:
        raise Unreadable(f"invalid field: {exc.errors()[0]['loc']}: "
                         f"{exc.errors()[0]['msg']}") from exc


def _content_parts(data: dict[str, Any], backup_id: PydanticObjectId
                   ) -> tuple[list[ContentItem], list[ContentObject]]:
    try:
        items = [ContentItem.model_validate({**i, "backupId": backup_id})
                 for i in data.get("items") or []]
        objects = [ContentObject.model_validate({**o, "_id": o["address"]})
                   for o in data.get("objects") or []]
    except (ValidationError, KeyError, TypeError) as exc:
        raise Unreadable(f"invalid item or object: {exc}") from exc
    return items, objects


def content_backup(targets: StorageTargets, target: str, key: str, data: dict[str, Any],
                   raw: bytes, items: list[ContentItem], objects: list[ContentObject],
                   admin: PydanticObjectId) -> Backup:
    """The Backup record a content manifest describes (the manifest is the artifact)."""
    backup_id = _object_id(data.get("backupId"), "backupId")
    counts = {s.value: sum(i.status is s for i in items) for s in ItemStatus}
    failed = [i for i in items if i.status is ItemStatus.failed]
    new = {a for i in items if i.status is ItemStatus.new for a in i.objects}
    new_bytes = sum(o.stored_bytes for o in objects if o.address in new)
    try:
        return Backup(
            id=backup_id, admin=admin, type=data.get("type") or "automatic",
            status=(BackupStatus.failed if items and len(failed) == len(items)
                    else BackupStatus.completed),
            source=data.get("source"), kind=BackupKind.content,
            created_at=_when(data, "createdAt"), retention_days=data.get("retentionDays") or 30,
            notes=data.get("notes"), options=data.get("options") or {}, format_chain=["json"],
            storage_key=key, manifest_key=key, sha256=hashlib.sha256(raw).hexdigest(),
            stored_bytes=len(raw), size_mb=round((new_bytes + len(raw)) / MB, 6),
            plaintext_bytes=sum(i.size or 0 for i in items),
            contents=[ContentEntry(name=n, count=c) for n, c in counts.items()],
            error=(f"partial: {len(failed)} of {len(items)} items failed" if failed
                   else None), **_placed(targets, target))
    except ValidationError as exc:
        raise Unreadable(f"invalid field: {exc.errors()[0]['msg']}") from exc


async def _missing_objects(objects: list[ContentObject]) -> list[ContentObject]:
    addresses = [o.address for o in objects]
    present = {o.address for o in await ContentObject.find(
        {"_id": {"$in": addresses}}).to_list()} if addresses else set()
    return [o for o in objects if o.address not in present]


@dataclass
class Rebuild:
    targets: StorageTargets
    progress: Progress
    dry_run: bool
    report: RebuildReport = field(default_factory=lambda: RebuildReport(dry_run=False,
                                                                       manifests=0))
    databases: dict[str, Found] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.report.dry_run = self.dry_run

    def unreadable(self, target: str, key: str, reason: str) -> None:
        log.warning("manifest unreadable", target=target, key=key, reason=reason)
        self.report.add("unreadable", UnreadableEntry(target=target, key=key, reason=reason))

    async def scan(self, name: str) -> None:
        """Read each manifest on one target: content ones are rebuilt at once, database
        ones gathered (a copy on another target is the same backup)."""
        storage = self.targets.named(name)
        async for info in storage.list_objects(""):
            if not info.key.endswith(MANIFEST_SUFFIX):
                continue
            self.report.manifests += 1
            self.progress.items_done += 1
            try:
                data, raw = await read_manifest(storage, info.key)
                if info.key.startswith(CONTENT_PREFIX) or data.get("kind") == "content":
                    await self.content(name, info.key, data, raw)
                else:
                    backup_id = str(_object_id(data.get("id"), "id"))
                    found = self.databases.setdefault(backup_id, Found(data, info.key))
                    found.targets.append(name)
            except Unreadable as exc:
                self.unreadable(name, info.key, str(exc))
            except Exception as exc:  # one bad object never stops the rebuild
                self.unreadable(name, info.key, error_text(exc))

    async def content(self, target: str, key: str, data: dict[str, Any], raw: bytes) -> None:
        backup_id = _object_id(data.get("backupId"), "backupId")
        entry = RebuiltEntry(id=str(backup_id), source=data.get("source"), kind="content",
                             target=target)
        items, objects = _content_parts(data, backup_id)
        # Objects lost on their own (a backup that is still recorded) come back too.
        missing = await _missing_objects(objects)
        self.report.objects_recreated += len(missing)
        if not self.dry_run:
            for obj in missing:
                await obj.save()
        if await Backup.get(backup_id) is not None:
            self.report.add("skipped", entry)
            return
        backup = content_backup(self.targets, target, key, data, raw, items, objects,
                                await _admin(data.get("admin")))
        self.report.add("recreated", entry)
        self.report.items_recreated += len(items)
        if self.dry_run:
            return
        # Items before the backup: its presence means the rest is there.
        await ContentItem.find({"backupId": backup_id}).delete()
        if items:
            await ContentItem.insert_many(items)
        await backup.insert()

    async def database(self, found: Found) -> None:
        entry = RebuiltEntry(id=str(found.manifest.get("id")), source=found.manifest.get(
            "source"), kind=found.manifest.get("kind"), target=_primary(found))
        try:
            if await Backup.get(_object_id(entry.id, "id")) is not None:
                self.report.add("skipped", entry)
                return
            backup = await database_backup(self.targets, found)
            if not self.dry_run:
                await backup.insert()
        except DuplicateKeyError:  # recorded meanwhile (another rebuild, another replica)
            self.report.add("skipped", entry)
            return
        except Unreadable as exc:
            self.unreadable(entry.target, found.key, str(exc))
            return
        except Exception as exc:  # one bad object never stops the rebuild
            self.unreadable(entry.target, found.key, error_text(exc))
            return
        self.report.add("recreated", entry)


async def rebuild_catalog(targets: StorageTargets, progress: Progress,
                          dry_run: bool = False) -> RebuildReport:
    """Recreate missing catalog records from the manifests on every storage target."""
    run = Rebuild(targets, progress, dry_run)
    for name in targets.names():
        progress.set_phase("reading manifests", name)
        try:
            await run.scan(name)
        except Exception as exc:  # a target that cannot be listed: the others still count
            run.unreadable(name, "", f"cannot list the target: {error_text(exc)}")
    progress.set_phase("recording")
    for found in run.databases.values():
        await run.database(found)
    log.info("catalog rebuild finished", dry_run=dry_run, recreated=run.report.recreated_count,
             skipped=run.report.skipped_count, unreadable=run.report.unreadable_count)
    return run.report


async def run_catalog_rebuild(ctx: JobContext) -> dict[str, Any]:
    """The `catalog_rebuild` job handler."""
    params = params_of(ctx.job, CatalogRebuildParams)
    report = await rebuild_catalog(ctx.all_targets, ctx.progress, params.dry_run)
    result: dict[str, Any] = report.model_dump(mode="json", by_alias=True)
    return result
