"""Content backups: list a source's items, store each verified item once by its content
address, and record the backup as a manifest of its items.

Every backup after the first is incremental: an IPFS item already stored is not
fetched again, nor a Gaia file whose ETag has not changed.
"""

import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog
from beanie import PydanticObjectId
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from app.config import ContentSourceKind, ContentSourceSettings, ContentType, Settings
from app.errors import AppError, InvalidInputError
from app.models.backup import Backup, BackupKind, BackupStatus, BackupType, ContentEntry
from app.models.common import utcnow
from app.models.content import (
    ContentBackupCreate,
    ContentItem,
    ContentObject,
    FullBackupCreate,
    GaiaUrlState,
    ItemStatus,
)
from app.models.job import BackupJob, JobKind, JobTrigger
from app.models.requests import DatabaseBackupCreate
from app.services.access.auth import system_user_id
from app.services.artifacts.stages import Chunks, Digest, from_bytes
from app.services.catalog.queries import update_backup
from app.services.content import gaia, ipfs
from app.services.content.formats.cid import Cid
from app.services.content.formats.dag import DagWalk
from app.services.content.outbound import Outbound
from app.services.databases.backup import MB, back_up, discard_backup, sealed, source_or_error
from app.services.databases.manifest import format_chain
from app.services.jobs.runner import JobContext, JobRunner, Progress, error_text
from app.services.storage import Storage

log = structlog.get_logger(__name__)
ERROR_SAMPLE = 5
LOOKUP_BATCH = 500
DUPLICATE_KEY = 11000
T = TypeVar("T")
# Items in progress per fetch slot: the rest of an item's time is catalog and storage work.
ITEMS_PER_FETCH = 4


def content_source_or_error(settings: Settings, name: str) -> ContentSourceSettings:
    source = settings.content_source(name)
    if source is None:
        known = ", ".join(s.name for s in settings.content.sources) or "none"
        raise InvalidInputError(f"Unknown content source {name!r} (configured: {known})",
                                [{"field": "source", "message": "unknown content source"}])
    if not settings.content.enabled:
        raise InvalidInputError("Content backups are disabled (BACKUP_CONTENT__ENABLED)")
    return source


async def submit_content_backup(runner: JobRunner, body: ContentBackupCreate,
                                requested_by: PydanticObjectId | None,
                                trigger: JobTrigger = JobTrigger.api,
                                backup_type: BackupType = BackupType.manual) -> BackupJob:
    content_source_or_error(runner.settings, body.source)
    params = {"request": body.model_dump(mode="json", by_alias=True),
              "backupType": backup_type.value}
    return await runner.submit(JobKind.content, params, source=body.source, trigger=trigger,
                               requested_by=requested_by)


def outbound_for(settings: Settings) -> Outbound:
    """A client allowed to reach the configured gateways, hubs and Kubo APIs only."""
    content = settings.content
    allowed = [str(u) for u in [*content.ipfs_gateways, *content.gaia_hubs]]
    allowed += [str(s.kubo_api) for s in content.sources if s.kubo_api]
    if content.kubo_api:
        allowed.append(str(content.kubo_api))
    return Outbound(allowed, content.timeout_seconds)


def _field_values(document: dict[str, Any], path: str) -> list[str]:
    value: Any = document
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


async def list_items(settings: Settings, source: ContentSourceSettings,
                     outbound: Outbound) -> AsyncIterator[tuple[str, str | None]]:
    """(reference, origin) of every item the source names."""
    if source.kind is ContentSourceKind.static:
        for item in source.items:
            yield item, None
    elif source.kind is ContentSourceKind.kubo_pins:
        assert source.kubo_api is not None
        for cid in await ipfs.kubo_pins(outbound, str(source.kubo_api)):
            yield cid, f"pin on {source.kubo_api}"
    else:
        mongo = settings.source(source.mongo_source or "")
        assert mongo is not None
        assert source.collection
        assert source.field
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo.uri.get_secret_value(), serverSelectionTimeoutMS=10_000)
        try:
            collection = client[mongo.database_name()][source.collection]
            async for document in collection.find(source.filter, {source.field: 1}):
                for value in _field_values(document, source.field):
                    yield value, f"{source.collection}/{document.get('_id')}"
        finally:
            await client.close()


@dataclass
class Run:
    """State shared by the items of one content backup."""

    settings: Settings
    storage: Storage
    outbound: Outbound
    progress: Progress
    limit: asyncio.Semaphore
    prefixes: list[str] = field(default_factory=list)
    new_bytes: int = 0
    # One fetch per address even when several items (or directories) share it.
    inflight: dict[str, asyncio.Task[list[str]]] = field(default_factory=dict)
    # Objects already stored (looked up in bulk) and the ones this run stores; the new
    # ones are recorded together once the items are done.
    known: dict[str, ContentObject] = field(default_factory=dict)
    new: dict[str, ContentObject] = field(default_factory=dict)

    async def preload(self, addresses: list[str]) -> None:
        """Look up which addresses are stored, in bulk, and mark them as in use now
        (before anything references them, so retention's grace period covers them)."""
        for start in range(0, len(addresses), LOOKUP_BATCH):
            batch = addresses[start:start + LOOKUP_BATCH]
            async for obj in ContentObject.find({"_id": {"$in": batch}}):
                self.known[obj.address] = obj
        await ContentObject.get_pymongo_collection().update_many(
            {"_id": {"$in": list(self.known)}}, {"$set": {"lastUsedAt": utcnow()}})

    async def stored(self, address: str) -> ContentObject | None:
        """The stored object at address (marked as in use now), or None."""
        if address not in self.known:
            found = await ContentObject.get(address)
            if found is None:
                return None
            await ContentObject.get_pymongo_collection().update_one(
                {"_id": address}, {"$set": {"lastUsedAt": utcnow()}})
            self.known[address] = found
        return self.known[address]

    async def record_new(self) -> None:
        if not self.new:
            return
        try:
            await ContentObject.insert_many(list(self.new.values()), ordered=False)
        except BulkWriteError as exc:
            # Another backup stored the same content (at the same key) meanwhile.
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise


async def _store(run: Run, key: str, plaintext: Chunks) -> tuple[int, str]:
    digest = Digest()
    # Items run side by side already; each compresses in its own thread, no workers.
    stored = await run.storage.put(key, sealed(run.settings, plaintext, digest, run.progress,
                                               threads=-1))
    run.new_bytes += stored
    return stored, digest.hexdigest


async def ensure_ipfs(run: Run, cid: Cid) -> list[str]:
    """Store cid (and, for a directory, its entries) unless stored; returns every address."""
    address = ipfs.address_of(cid)
    if address not in run.inflight:
        run.inflight[address] = asyncio.create_task(_ensure_ipfs(run, cid, address))
    return await asyncio.shield(run.inflight[address])


async def _ensure_ipfs(run: Run, cid: Cid, address: str) -> list[str]:
    existing = await run.stored(address)
    fetched = existing is None
    if existing is not None:
        children = [ipfs.cid_of_address(child) for child in existing.children]
    else:
        chain = format_chain(run.settings, "car")
        key = f"content/ipfs/{cid}.{'.'.join(chain)}"
        walk = DagWalk(cid)

        async def attempt(gateway: str) -> tuple[int, str]:
            walk.blocks, walk.block_bytes, walk.children = 0, 0, []
            async with run.limit:
                return await ipfs.fetch_entity(run.outbound, run.settings.content, gateway,
                                               cid, walk, partial(_store, run, key))

        stored, sha = await ipfs.with_gateways(run.settings.content, attempt)
        children = [link.cid for link in walk.children]
        existing = ContentObject(id=address, type=ContentType.ipfs, storage_key=key,
                                 format_chain=chain, size=walk.block_bytes,
                                 stored_bytes=stored, sha256=sha, blocks=walk.blocks,
                                 kind=walk.kind, children=[ipfs.address_of(c) for c in children])
    addresses = [address]
    for child in children:
        addresses += await ensure_ipfs(run, child)
    if fetched:  # a new directory counts as stored only once all its entries are
        run.new[address] = existing
    return addresses


def _with(item: ContentItem, **fields: Any) -> ContentItem:
    updated: ContentItem = item.model_copy(update=fields)
    return updated


async def ensure_gaia(run: Run, url: str, item: ContentItem) -> ContentItem:
    """Store a Gaia file unless its ETag is unchanged since a stored copy; returns the
    item completed."""
    item = _with(item, reference=url, path=gaia.gaia_path(url, run.prefixes))
    previous = await GaiaUrlState.get(url)
    if previous is not None:
        etag = await gaia.current_etag(run.outbound, url)
        kept = await run.stored(previous.address) if etag == previous.etag else None
        if kept is not None:
            return _with(item, address=kept.address, objects=[kept.address], etag=etag,
                         status=ItemStatus.existing, size=kept.size,
                         sha256=previous.address.removeprefix("gaia:"))
    spool_dir = run.settings.storage.spool_dir or Path(tempfile.gettempdir())
    spool_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=spool_dir, prefix="gaia-") as handle:
        spool = Path(handle.name)
        async with run.limit:
            fetched = await gaia.download(run.outbound, run.settings.content, url, spool,
                                          run.prefixes)
        address = f"gaia:{fetched.sha256}"
        status = ItemStatus.existing
        if address not in run.new and await run.stored(address) is None:
            chain = format_chain(run.settings, "bin")
            key = f"content/gaia/{fetched.sha256}.{'.'.join(chain)}"
            stored, sha = await _store(run, key, _file_chunks(spool))
            run.new[address] = ContentObject(id=address, type=ContentType.gaia,
                                             storage_key=key, format_chain=chain,
                                             size=fetched.size, stored_bytes=stored,
                                             sha256=sha, etag=fetched.etag)
            status = ItemStatus.new
    if fetched.etag:
        await GaiaUrlState(id=url, etag=fetched.etag, address=address).save()
    return _with(item, address=address, objects=[address], status=status, size=fetched.size,
                 sha256=fetched.sha256, etag=fetched.etag)


def _addresses(references: list[tuple[str, str | None]]) -> list[str]:
    found = []
    for reference, _ in references:
        try:
            found.append(ipfs.address_of(ipfs.cid_of_reference(reference)))
        except InvalidInputError:
            pass  # reported when the item is backed up
    return found


async def _file_chunks(path: Path) -> Chunks:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, MB):
            yield chunk


async def back_up_item(run: Run, source: ContentSourceSettings, backup_id: PydanticObjectId,
                       reference: str, origin: str | None) -> ContentItem:
    """One item to storage; a failure is recorded on the item, never raised."""
    item = ContentItem(backup_id=backup_id, source=source.name, type=source.type,
                       reference=reference, origin=origin, status=ItemStatus.failed)
    try:
        if source.type is ContentType.ipfs:
            cid = ipfs.cid_of_reference(reference)
            objects = await ensure_ipfs(run, cid)
            address = ipfs.address_of(cid)
            root = run.new.get(address) or run.known[address]
            item = _with(item, address=address, objects=list(dict.fromkeys(objects)),
                         size=root.size, sha256=root.sha256,
                         status=ItemStatus.new if address in run.new else ItemStatus.existing)
        else:
            item = await ensure_gaia(run, gaia.gaia_url(reference, run.prefixes), item)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        item.error = error_text(exc)
        log.warning("content item failed", source=source.name, reference=reference[:200],
                    error=item.error)
    run.progress.items_done += 1
    return item


async def bounded(width: int, work: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the work `width` at a time (not all at once: each item also talks to the
    catalog), results in order."""
    results: list[T | None] = [None] * len(work)
    queue = iter(enumerate(work))

    async def worker() -> None:
        for index, job in queue:
            results[index] = await job()

    await asyncio.gather(*(worker() for _ in range(min(width, len(work)))))
    return [r for r in results if r is not None]


def _manifest(backup: Backup, items: list[ContentItem], counts: dict[str, int]) -> bytes:
    return json.dumps({
        "manifestVersion": 1, "backupId": str(backup.id), "source": backup.source,
        "kind": "content", "createdAt": backup.created_at.isoformat(), "counts": counts,
        "note": "Objects live under content/ by address; IPFS objects are CAR files "
                "(ipfs dag import), Gaia objects the file bytes; each may be zstd-"
                "compressed and age-encrypted as its suffix says.",
        "items": [i.model_dump(mode="json", by_alias=True,
                               exclude={"id", "revision_id", "backup_id"}) for i in items],
    }, indent=1).encode()


async def back_up_content(settings: Settings, storage: Storage, progress: Progress,
                          body: ContentBackupCreate, *, admin: PydanticObjectId,
                          backup_type: BackupType = BackupType.manual,
                          job_id: PydanticObjectId | None = None) -> Backup:
    """Back up every item of one content source; returns the Backup."""
    source = content_source_or_error(settings, body.source)
    created, backup_id = utcnow(), PydanticObjectId()
    backup = Backup(id=backup_id, created_at=created, admin=admin, type=backup_type,
                    source=source.name, kind=BackupKind.content, job_id=job_id,
                    retention_days=body.retention_days or settings.retention.days,
                    notes=body.notes, storage_backend=storage.name, format_chain=["json"],
                    storage_key=f"content/backups/{source.name}/{created:%Y/%m/%d}/"
                                f"{backup_id}.manifest.json",
                    options={"contentSource": source.name, "type": source.type.value})
    backup.manifest_key = backup.storage_key
    await backup.insert()
    assert backup.id is not None
    started = time.monotonic()
    outbound = outbound_for(settings)
    run = Run(settings, storage, outbound, progress,
              asyncio.Semaphore(settings.content.concurrency))
    try:
        progress.set_phase("listing")
        if source.type is ContentType.gaia:
            run.prefixes = await gaia.read_prefixes(outbound, settings.content)
        references = [r async for r in list_items(settings, source, outbound)]
        if source.type is ContentType.ipfs:
            await run.preload(list(dict.fromkeys(_addresses(references))))
        progress.items_total = len(references)
        progress.set_phase("fetching")
        items = await bounded(settings.content.concurrency * ITEMS_PER_FETCH, [
            partial(back_up_item, run, source, backup.id, ref, origin)
            for ref, origin in references])
        await run.record_new()
        if items:
            await ContentItem.insert_many(list(items))
        counts = {s.value: sum(i.status is s for i in items) for s in ItemStatus}
        failed = [i for i in items if i.status is ItemStatus.failed]
        progress.set_phase("recording")
        document = _manifest(backup, list(items), counts)
        digest = Digest()
        assert backup.storage_key is not None
        stored = await storage.put(backup.storage_key, digest.tap(from_bytes(document)))
        error = None
        if failed:
            sample = "; ".join(f"{i.reference[:80]}: {i.error}" for i in failed[:ERROR_SAMPLE])
            error = f"partial: {len(failed)} of {len(items)} items failed: {sample}"
        status = (BackupStatus.failed if items and len(failed) == len(items)
                  else BackupStatus.completed)
        await update_backup(
            backup, only_if={"status": BackupStatus.pending.value}, status=status,
            error=error, sha256=digest.hexdigest, stored_bytes=stored,
            size_mb=round((run.new_bytes + stored) / MB, 6),
            plaintext_bytes=sum(i.size or 0 for i in items),
            duration_ms=int((time.monotonic() - started) * 1000),
            contents=[ContentEntry(name=name, count=count) for name, count in counts.items()])
        log.info("content backup finished", backup_id=str(backup.id), source=source.name,
                 **counts, new_bytes=run.new_bytes)
        return backup
    except BaseException as exc:
        message = error_text(exc) if not isinstance(exc, asyncio.CancelledError) else \
            "Backup interrupted: the service stopped"
        for task in run.inflight.values():
            task.cancel()
        try:  # what was stored is verified and durable: keep it findable
            await asyncio.shield(run.record_new())
        except Exception:
            log.exception("could not record stored content objects")
        await asyncio.shield(ContentItem.find({"backupId": backup.id}).delete())
        await asyncio.shield(discard_backup(storage, backup, message))
        raise
    finally:
        await outbound.close()


async def run_content_backup(ctx: JobContext) -> dict[str, Any]:
    """The `content` job handler."""
    body = ContentBackupCreate.model_validate(ctx.job.params["request"])
    backup = await back_up_content(
        ctx.settings, ctx.storage, ctx.progress, body,
        admin=ctx.job.requested_by or await system_user_id(),
        backup_type=BackupType(ctx.job.params.get("backupType", BackupType.manual.value)),
        job_id=ctx.job.id)
    await ctx.attach_backup(backup.id)
    return content_result(backup)


def content_result(backup: Backup) -> dict[str, Any]:
    counts = {c.name: c.count or 0 for c in backup.contents}
    if backup.status is BackupStatus.failed:
        raise AppError(backup.error or "Every item failed")
    return {"backupId": str(backup.id), "items": sum(counts.values()), **counts,
            "failedItems": counts.get("failed", 0), "storedBytes": backup.stored_bytes,
            "partial": bool(backup.error)}


async def submit_full_backup(runner: JobRunner, body: FullBackupCreate,
                             requested_by: PydanticObjectId | None,
                             trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    settings = runner.settings
    databases = body.sources if body.sources is not None else [
        s.name for s in settings.all_sources() if s.enabled]
    contents = body.content_sources if body.content_sources is not None else (
        [s.name for s in settings.content.sources] if settings.content.enabled else [])
    for name in databases:
        source_or_error(settings, name)
    for name in contents:
        content_source_or_error(settings, name)
    if not databases and not contents:
        raise InvalidInputError("Nothing to back up: no database or content source")
    params = {"sources": databases, "contentSources": contents, "notes": body.notes,
              "retentionDays": body.retention_days}
    return await runner.submit(JobKind.full, params, trigger=trigger, requested_by=requested_by)


async def run_full_backup(ctx: JobContext) -> dict[str, Any]:
    """The `full` job handler: each database source, then each content source, in one job.

    A source that fails does not stop the others; the job fails only if all did."""
    params = ctx.job.params
    admin = ctx.job.requested_by or await system_user_id()
    notes, retention = params.get("notes"), params.get("retentionDays")
    outcomes: list[dict[str, Any]] = []
    for name in params["sources"]:
        ctx.progress.set_phase("database", name)
        try:
            backup = await back_up(ctx.settings, ctx.storage, ctx.progress,
                                   DatabaseBackupCreate(source=name, notes=notes,
                                                        retention_days=retention), admin=admin,
                                   job_id=ctx.job.id)
            outcomes.append({"source": name, "backupId": str(backup.id), "status": "completed"})
        except Exception as exc:
            outcomes.append({"source": name, "status": "failed", "error": error_text(exc)})
    for name in params["contentSources"]:
        ctx.progress.set_phase("content", name)
        try:
            backup = await back_up_content(ctx.settings, ctx.storage, ctx.progress,
                                           ContentBackupCreate(source=name, notes=notes,
                                                               retention_days=retention),
                                           admin=admin, job_id=ctx.job.id)
            outcomes.append({"source": name, "backupId": str(backup.id),
                             "status": backup.status.value, "error": backup.error})
        except Exception as exc:
            outcomes.append({"source": name, "status": "failed", "error": error_text(exc)})
    bad = [o for o in outcomes if o["status"] != "completed" or o.get("error")]
    if len(bad) == len(outcomes):
        raise AppError("Every part of the full backup failed: "
                       + "; ".join(f"{o['source']}: {o.get('error')}" for o in bad))
    return {"backups": outcomes, "partial": bool(bad), "failedItems": len(bad)}
