"""Getting content back: a content backup as one CAR or as a tar of its Gaia files, and
its IPFS items imported into a Kubo node, every block checked on the way."""

import tarfile
from collections.abc import AsyncIterator
from typing import Any

import structlog
from beanie import PydanticObjectId

from app.config import ContentType, Settings
from app.errors import ConflictError, InvalidInputError
from app.models.backup import GOOD_STATUSES, Backup, BackupKind
from app.models.content import ContentImportRequest, ContentItem, ContentObject, ItemStatus
from app.models.job import BackupJob, JobKind, JobTrigger
from app.models.job_params import ContentImportParams, params_of
from app.services.artifacts.read import opened
from app.services.artifacts.stages import Digest
from app.services.catalog.queries import get_backup
from app.services.content import ipfs
from app.services.content.formats.car import header_bytes
from app.services.content.located import object_storage
from app.services.content.outbound import outbound_for
from app.services.jobs.runner import JobContext, JobRunner, error_text
from app.services.storage import StorageTargets, Targets, as_targets

log = structlog.get_logger(__name__)
TAR_BLOCK = 512


async def content_backup(backup_id: PydanticObjectId) -> Backup:
    backup = await get_backup(backup_id)
    if backup.kind is not BackupKind.content:
        raise ConflictError(f"Backup {backup_id} is a {backup.kind} backup, not content")
    if backup.status not in GOOD_STATUSES:
        raise ConflictError(f"Backup {backup_id} is {backup.status.value}")
    return backup


async def stored_items(backup_id: PydanticObjectId, kind: ContentType) -> list[ContentItem]:
    return await ContentItem.find({"backupId": backup_id, "type": kind.value,
                                   "status": {"$ne": ItemStatus.failed.value}}).to_list()


async def _object(address: str) -> ContentObject:
    obj = await ContentObject.get(address)
    if obj is None:
        raise ConflictError(f"Stored content {address} is missing from the catalog")
    return obj


async def readable_objects(settings: Settings, storage: Targets,
                           items: list[ContentItem]) -> StorageTargets:
    """The targets, once every object the items need is known to be on a configured one:
    an export fails with 409 `unknown_storage_target` before it starts, not halfway."""
    targets = as_targets(settings, storage)
    addresses = list(dict.fromkeys(a for i in items for a in i.objects))
    for start in range(0, len(addresses), 500):
        async for obj in ContentObject.find({"_id": {"$in": addresses[start:start + 500]}}):
            object_storage(targets, obj)
    return targets


async def _sections(settings: Settings, targets: StorageTargets, address: str
                    ) -> AsyncIterator[bytes]:
    obj = await _object(address)
    car = opened(object_storage(targets, obj).get(obj.storage_key), obj.format_chain,
                 settings)
    async for section in ipfs.checked_blocks(car, {ipfs.cid_of_address(address)}):
        yield section


async def car_stream(settings: Settings, storage: Targets, items: list[ContentItem]
                     ) -> AsyncIterator[bytes]:
    """One CAR holding every item's DAG, rooted at the items' CIDs; blocks re-checked, each
    object read from the target it was written to."""
    targets = as_targets(settings, storage)
    roots = list(dict.fromkeys(i.address for i in items if i.address))
    yield header_bytes([ipfs.cid_of_address(r) for r in roots])
    done: set[str] = set()
    for item in items:
        for address in item.objects:
            if address not in done:
                done.add(address)
                async for section in _sections(settings, targets, address):
                    yield section


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


async def tar_stream(settings: Settings, storage: Targets, items: list[ContentItem]
                     ) -> AsyncIterator[bytes]:
    """The Gaia files as a tar tree `address/path`, streamed; each file's SHA-256 checked,
    each read from the target it was written to."""
    targets = as_targets(settings, storage)
    for item in items:
        if not item.address:
            continue
        obj = await _object(item.address)
        name = item.path or item.reference.split("://", 1)[-1]
        yield _tar_header(name, obj.size)
        digest = Digest()  # hashes in a worker thread
        stored = object_storage(targets, obj).get(obj.storage_key)
        async for chunk in digest.tap(opened(stored, obj.format_chain, settings)):
            yield chunk
        if digest.hexdigest != item.sha256 or digest.size != obj.size:
            raise ConflictError(f"stored copy of {item.reference} does not match its SHA-256")
        yield b"\0" * (-digest.size % TAR_BLOCK)
    yield b"\0" * (2 * TAR_BLOCK)


async def import_into_kubo(settings: Settings, storage: Targets, backup_id: PydanticObjectId,
                           request: ContentImportRequest) -> dict[str, Any]:
    """Import each IPFS item into the configured Kubo node; CIDs checked before sending."""
    await content_backup(backup_id)
    kubo = settings.content.kubo_api
    if kubo is None:
        raise InvalidInputError("No Kubo API to import into (BACKUP_CONTENT__KUBO_API)")
    items = await stored_items(backup_id, ContentType.ipfs)
    outbound = outbound_for(settings)
    imported, errors = [], []
    try:
        for item in items:
            try:
                roots = await ipfs.import_car(outbound, str(kubo),
                                              car_stream(settings, storage, [item]), request.pin)
                cid = item.address.removeprefix("ipfs:") if item.address else ""
                mine = [r for r in roots if r.get("Cid", {}).get("/") == cid]
                if not mine or mine[0].get("PinErrorMsg"):
                    raise ConflictError(f"Kubo did not take root {cid}: "
                                        f"{mine[0].get('PinErrorMsg') if mine else 'absent'}")
                imported.append(cid)
            except Exception as exc:
                errors.append(f"{item.reference}: {error_text(exc)}")
    finally:
        await outbound.close()
    log.info("content imported", backup_id=str(backup_id), imported=len(imported),
             failed=len(errors))
    if errors and not imported:
        raise ConflictError("; ".join(errors[:5]))
    return {"backupId": str(backup_id), "imported": imported, "errors": errors,
            "partial": bool(errors)}


async def run_content_import(ctx: JobContext) -> dict[str, Any]:
    """The `content_import` job handler."""
    assert ctx.job.backup_id is not None
    ctx.progress.set_phase("importing")
    return await import_into_kubo(ctx.settings, ctx.all_targets, ctx.job.backup_id,
                                  params_of(ctx.job, ContentImportParams))


async def submit_content_import(runner: JobRunner, backup: Backup, body: ContentImportRequest,
                                requested_by: PydanticObjectId | None,
                                trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `content_import` job: the backup's IPFS items into the configured Kubo."""
    if runner.settings.content.kubo_api is None:
        raise InvalidInputError("No Kubo API to import into (BACKUP_CONTENT__KUBO_API)")
    params = ContentImportParams.model_validate(body.model_dump())
    return await runner.submit(JobKind.content_import, params, source=backup.source,
                               backup_id=backup.id, requested_by=requested_by, trigger=trigger)
