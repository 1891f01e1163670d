"""Verify a stored backup: size and SHA-256 of the stored bytes, then (when it can be
opened) decrypt, decompress and check the inner format."""

from typing import Any

import structlog
from beanie import PydanticObjectId

from app.config import Settings, SourceKind
from app.models.backup import Backup, BackupKind, ContentEntry, Verification, VerificationState
from app.models.common import utcnow
from app.models.content import ContentItem, ContentObject
from app.services.artifacts.read import (
    HeaderState,
    IdentityMismatchError,
    can_open,
    check_header,
    plaintext,
    require_artifact,
)
from app.services.artifacts.stages import Chunks, Digest, counted, drain
from app.services.catalog.queries import get_backup, update_backup
from app.services.content.located import object_storage
from app.services.databases.kinds import in_other_format, kind_of
from app.services.jobs.runner import JobContext, Progress, error_text
from app.services.recoverability.records import record_manual
from app.services.storage import Storage, StorageTargets, Targets, as_targets
from app.services.storage.copies import check_copy, digest_of

log = structlog.get_logger(__name__)


async def check_content_objects(storage: Targets, backup_id: PydanticObjectId,
                                progress: Progress) -> list[str]:
    """Every object a content backup references: present (on the target it was written
    to), of its size and SHA-256. An object on a target not configured raises (409)."""
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
        held = (object_storage(storage, obj) if isinstance(storage, StorageTargets)
                else storage)
        try:
            digest = await digest_of(held, obj.storage_key, progress.add_read)
        except Exception as exc:
            errors.append(f"{address}: {error_text(exc)}")
            continue
        if digest.size != obj.stored_bytes or digest.hexdigest != obj.sha256:
            errors.append(f"{address}: stored bytes differ from the recorded size or SHA-256")
        progress.items_done += 1
    return errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])


async def _inner_check(stream: Chunks, kind: str | None, settings: Settings,
                       expected: list[ContentEntry]) -> tuple[list[ContentEntry], list[str]]:
    """Parse the plaintext; returns what it holds and how it differs from the manifest,
    raises when it is malformed."""
    # As before the registry, a record without a kind is read as a PostgreSQL dump.
    database_kind = kind_of(SourceKind(kind or "postgres"))
    return await database_kind.check_archive(stream, settings, expected)


async def _unopenable(storage: Storage, backup: Backup, result: Verification, problem: str,
                      progress: Progress) -> list[str]:
    """The configured identity cannot open the backup: a configuration error, unless the
    stored bytes are damaged too. Raises when they are intact (nothing is recorded)."""
    digest = await digest_of(storage, require_artifact(backup), progress.add_read)
    result.sha256_ok = digest.hexdigest == backup.sha256
    if result.sha256_ok and result.size_ok:
        log.warning("verify: identity cannot open the backup", backup_id=str(backup.id))
        raise IdentityMismatchError(
            f"{problem}. This is a configuration error: the backup is intact (size and "
            "SHA-256 match) and its verification state is left as it was",
            {"backupId": str(backup.id), "recipients": backup.recipients})
    result.deep = False
    return ["SHA-256 of the stored object differs from the recorded one",
            f"and it cannot be opened: {problem}"]


async def _check_artifact(settings: Settings, storage: Storage, backup: Backup,
                          result: Verification, progress: Progress) -> list[str]:
    """Read the whole object once: SHA-256, and when it can be opened, its contents."""
    key = require_artifact(backup)
    if result.deep:
        header, problem = await check_header(storage, backup, settings)
        if header in (HeaderState.mismatch, HeaderState.no_identity):
            return await _unopenable(storage, backup, result, problem, progress)
    errors: list[str] = []
    digest = Digest()
    raw = counted(digest.tap(storage.get(key)), progress.add_read)
    progress.set_phase("verifying")
    try:
        if result.deep and not in_other_format(backup):
            result.contents, problems = await _inner_check(
                plaintext(raw, backup, settings), backup.kind.value if backup.kind else None,
                settings, backup.contents)
            errors += [f"content check failed: {p}" for p in problems]
        else:
            await drain(raw)
    except Exception as exc:
        errors.append(f"content check failed: {error_text(exc)}")
        digest = Digest()
        await drain(digest.tap(storage.get(key)))  # still report the checksum
    result.sha256_ok = digest.hexdigest == backup.sha256
    if not result.sha256_ok:
        errors.insert(0, "SHA-256 of the stored object differs from the recorded one")
    return errors


async def verify(settings: Settings, targets: Targets, backup_id: PydanticObjectId,
                 progress: Progress) -> Verification:
    """Check one backup (on the target it was written to) and each of its copies, and
    record the outcome. An identity that cannot open an intact backup, or a target that
    is not configured, raises and records nothing."""
    backup = await get_backup(backup_id)
    key = require_artifact(backup)
    all_targets = as_targets(settings, targets)
    storage = all_targets.for_backup(backup)
    result = Verification(deep=can_open(backup, settings), checked_at=utcnow())
    errors: list[str] = []
    info = await storage.stat(key)
    result.size_ok = info is not None and info.size == backup.stored_bytes
    if info is None:
        errors.append(f"stored object {key} is missing")
    elif not result.size_ok:
        errors.append(f"stored size {info.size} differs from the recorded {backup.stored_bytes}")
    if info is not None and backup.kind is BackupKind.content:
        progress.set_phase("verifying")
        digest = await digest_of(storage, key, progress.add_read)
        result.sha256_ok = digest.hexdigest == backup.sha256
        if not result.sha256_ok:
            errors.append("SHA-256 of the stored manifest differs from the recorded one")
        assert backup.id is not None
        # Each content object is read from the target it was written to.
        errors += await check_content_objects(all_targets, backup.id, progress)
    elif info is not None:
        errors += await _check_artifact(settings, storage, backup, result, progress)
    result.state = VerificationState.failed if errors else VerificationState.passed
    result.error = "; ".join(errors) or None
    copies = [c.model_copy(update={"verification": await check_copy(
        all_targets, backup, c, progress.add_read)}) for c in backup.copies]
    await update_backup(backup, verification=result, copies=copies)
    log.info("backup verified", backup_id=str(backup_id), state=result.state.value,
             deep=result.deep, error=result.error,
             copies={c.target: c.verification.state.value for c in copies})
    return result


async def run_verify(ctx: JobContext) -> dict[str, Any]:
    """The `verify` job handler."""
    assert ctx.job.backup_id is not None
    result = await verify(ctx.settings, ctx.all_targets, ctx.job.backup_id, ctx.progress)
    await record_manual(ctx.job, result, ctx.progress.bytes_read)
    if result.state is VerificationState.failed:
        raise ValueError(f"Verification failed: {result.error}")
    return result.model_dump(mode="json", by_alias=True)
