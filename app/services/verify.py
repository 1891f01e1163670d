"""Verify a stored backup: size and SHA-256 of the stored bytes, then (when it can be
opened) decrypt, decompress and check the inner format."""

from typing import Any

import structlog
from beanie import PydanticObjectId

from app.config import Settings, SourceKind
from app.models.backup import BackupKind, ContentEntry, Verification, VerificationState
from app.models.common import utcnow
from app.models.content import ContentItem, ContentObject
from app.services.artifact_read import can_open, plaintext, require_artifact
from app.services.catalog import get_backup, update_backup
from app.services.jobs import JobContext, Progress, error_text
from app.services.pipeline.stages import Chunks, Digest, counted, drain
from app.services.sources.mongo_archive import NamespaceEnd, read_archive
from app.services.sources.postgres import PgTools, check_pg_archive
from app.services.storage import Storage

log = structlog.get_logger(__name__)


async def check_content_objects(storage: Storage, backup_id: PydanticObjectId,
                                progress: Progress) -> list[str]:
    """Every object a content backup references: present, of its size and SHA-256."""
    errors: list[str] = []
    addresses: dict[str, None] = {}
    async for item in ContentItem.find({"backupId": backup_id}):
        addresses.update(dict.fromkeys(item.objects))
    progress.items_total = len(addresses)
    for address in addresses:
        obj = await ContentObject.get(address)
        if obj is None:
            errors.append(f"{address}: not in the catalog")
            continue
        digest = Digest()
        try:
            await drain(counted(digest.tap(storage.get(obj.storage_key)), progress.add_read))
        except Exception as exc:
            errors.append(f"{address}: {error_text(exc)}")
            continue
        if digest.size != obj.stored_bytes or digest.hexdigest != obj.sha256:
            errors.append(f"{address}: stored bytes differ from the recorded size or SHA-256")
        progress.items_done += 1
    return errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])


async def _inner_check(stream: Chunks, kind: str | None, settings: Settings,
                       expected: list[ContentEntry]) -> list[ContentEntry]:
    """Parse the plaintext; returns what it holds, raises when it is malformed."""
    if kind == SourceKind.mongodb.value:
        found: list[ContentEntry] = []
        async for event in read_archive(stream):
            if isinstance(event, NamespaceEnd):
                found.append(ContentEntry(name=event.summary.collection,
                                          count=event.summary.count, bytes=event.summary.bytes))
        wanted = {c.name: c.count for c in expected}
        got = {c.name: c.count for c in found}
        if wanted and wanted != got:
            raise ValueError(f"archive counts {got} differ from the catalog's {wanted}")
        return found
    tables = await check_pg_archive(stream, PgTools(settings.tools.pg_bin_dir))
    return [ContentEntry(name=t) for t in tables]


async def verify(settings: Settings, storage: Storage, backup_id: PydanticObjectId,
                 progress: Progress) -> Verification:
    """Check one backup and record the outcome on it."""
    backup = await get_backup(backup_id)
    key = require_artifact(backup)
    deep = can_open(backup, settings)
    result = Verification(deep=deep, checked_at=utcnow())
    errors: list[str] = []
    info = await storage.stat(key)
    result.size_ok = info is not None and info.size == backup.stored_bytes
    if info is None:
        errors.append(f"stored object {key} is missing")
    elif not result.size_ok:
        errors.append(f"stored size {info.size} differs from the recorded {backup.stored_bytes}")
    if info is not None and backup.kind is BackupKind.content:
        progress.set_phase("verifying")
        digest = Digest()
        await drain(counted(digest.tap(storage.get(key)), progress.add_read))
        result.sha256_ok = digest.hexdigest == backup.sha256
        if not result.sha256_ok:
            errors.append("SHA-256 of the stored manifest differs from the recorded one")
        assert backup.id is not None
        errors += await check_content_objects(storage, backup.id, progress)
    elif info is not None:
        digest = Digest()
        raw = counted(digest.tap(storage.get(key)), progress.add_read)
        progress.set_phase("verifying")
        try:
            if deep:
                result.contents = await _inner_check(plaintext(raw, backup, settings),
                                                     backup.kind.value if backup.kind else None,
                                                     settings, backup.contents)
            else:
                await drain(raw)
        except Exception as exc:
            errors.append(f"content check failed: {error_text(exc)}")
            digest = Digest()
            await drain(digest.tap(storage.get(key)))  # still report the checksum
        result.sha256_ok = digest.hexdigest == backup.sha256
        if not result.sha256_ok:
            errors.insert(0, "SHA-256 of the stored object differs from the recorded one")
    result.state = VerificationState.failed if errors else VerificationState.passed
    result.error = "; ".join(errors) or None
    await update_backup(backup, verification=result)
    log.info("backup verified", backup_id=str(backup_id), state=result.state.value,
             deep=deep, error=result.error)
    return result


async def run_verify(ctx: JobContext) -> dict[str, Any]:
    """The `verify` job handler."""
    assert ctx.job.backup_id is not None
    result = await verify(ctx.settings, ctx.storage, ctx.job.backup_id, ctx.progress)
    if result.state is VerificationState.failed:
        raise ValueError(f"Verification failed: {result.error}")
    return result.model_dump(mode="json", by_alias=True)
