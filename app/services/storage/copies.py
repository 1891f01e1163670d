"""Copies of a backup on other storage targets: made by streaming the stored object from
the primary (no temp file), checked by SHA-256, and read when the primary fails."""

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from app.errors import AppError, NotFoundError
from app.models.backup import Backup, BackupCopy, Verification, VerificationState
from app.models.common import utcnow
from app.services.artifacts.stages import Digest, counted, drain
from app.services.storage.base import ObjectInfo, Storage
from app.services.storage.targets import StorageTargets

log = structlog.get_logger(__name__)


def _text(exc: BaseException) -> str:
    return exc.message if isinstance(exc, AppError) else (str(exc) or type(exc).__name__)


def _failed(error: str, size_ok: bool | None = None,
            sha256_ok: bool | None = None) -> Verification:
    return Verification(state=VerificationState.failed, checked_at=utcnow(), error=error,
                        size_ok=size_ok, sha256_ok=sha256_ok)


def copy_names(wanted: list[str], primary: str) -> list[str]:
    """Targets to copy to: each once, never the primary."""
    return [n for n in dict.fromkeys(wanted) if n != primary]


async def copy_to(targets: StorageTargets, backup: Backup, name: str) -> BackupCopy:
    """Stream the artifact, then the manifest, from the primary to `name`."""
    assert backup.storage_key is not None
    assert backup.manifest_key is not None
    copy = BackupCopy(target=name, copied_at=utcnow())
    dest = targets.for_copy(name)
    if dest is None:
        copy.verification = _failed(f"storage target {name!r} is not configured")
        return copy
    source = targets.for_backup(backup)
    digest = Digest()
    try:
        copy.stored_bytes = await dest.put(backup.storage_key,
                                           digest.tap(source.get(backup.storage_key)))
        await dest.put(backup.manifest_key, source.get(backup.manifest_key))
    except Exception as exc:
        log.warning("backup copy failed", backup_id=str(backup.id), target=name,
                    error=_text(exc))
        for key in (backup.storage_key, backup.manifest_key):
            try:
                await dest.discard_incomplete(key)
                await dest.delete(key)
            except Exception as cleanup_exc:  # the target may be unreachable
                log.warning("could not remove a failed copy", target=name, key=key,
                            error=_text(cleanup_exc))
        copy.verification = _failed(f"copy to {name} failed: {_text(exc)}")
        return copy
    copy.sha256 = digest.hexdigest
    ok = digest.hexdigest == backup.sha256 and digest.size == backup.stored_bytes
    copy.verification = Verification(
        state=VerificationState.passed if ok else VerificationState.failed,
        checked_at=utcnow(), sha256_ok=ok, size_ok=digest.size == backup.stored_bytes,
        error=None if ok else "the copied bytes differ from the recorded SHA-256")
    log.info("backup copied", backup_id=str(backup.id), target=name, ok=ok)
    return copy


async def check_copy(targets: StorageTargets, backup: Backup, copy: BackupCopy,
                     on_bytes: Callable[[int], None] = lambda _: None) -> Verification:
    """Size and SHA-256 of one copy. An unreachable target keeps the copy's state (it
    proves nothing) and says why in `error`."""
    assert backup.storage_key is not None
    dest = targets.for_copy(copy.target)
    if dest is None:
        return copy.verification.model_copy(update={
            "error": f"storage target {copy.target!r} is not configured; not checked"})
    try:
        # A missing copy raises NotFoundError from the read itself (below).
        digest = await digest_of(dest, backup.storage_key, on_bytes)
    except AppError as exc:
        if isinstance(exc, NotFoundError):
            return _failed(f"the copy on {copy.target} is missing", size_ok=False)
        return copy.verification.model_copy(update={
            "checked_at": utcnow(), "error": f"not checked: {exc.message}"})
    size_ok = digest.size == backup.stored_bytes
    sha_ok = digest.hexdigest == backup.sha256
    if size_ok and sha_ok:
        return Verification(state=VerificationState.passed, checked_at=utcnow(),
                            sha256_ok=True, size_ok=True)
    return _failed(f"the copy on {copy.target} differs from the recorded size or SHA-256",
                   size_ok=size_ok, sha256_ok=sha_ok)


@dataclass
class ReadSource:
    """Where a restore reads from: the primary, or a copy (then `copy` names its target)."""

    storage: Storage
    copy: str | None = None
    primary_problem: str | None = None


async def digest_of(storage: Storage, key: str,
                    on_bytes: Callable[[int], None] = lambda _: None) -> Digest:
    digest = Digest()
    await drain(counted(digest.tap(storage.get(key)), on_bytes))
    return digest


async def good_copy(targets: StorageTargets, backup: Backup,
                    on_bytes: Callable[[int], None] = lambda _: None) -> ReadSource | None:
    """The first copy whose bytes match the recorded SHA-256 (read in full), if any."""
    assert backup.storage_key is not None
    for copy in backup.copies:
        dest = targets.for_copy(copy.target)
        if dest is None or copy.verification.state is VerificationState.failed:
            continue
        try:
            digest = await digest_of(dest, backup.storage_key, on_bytes)
        except AppError as exc:
            log.warning("copy not readable", backup_id=str(backup.id), target=copy.target,
                        error=exc.message)
            continue
        if digest.hexdigest == backup.sha256 and digest.size == backup.stored_bytes:
            return ReadSource(dest, copy.target)
    return None


async def remove_copies(targets: StorageTargets, backup: Backup) -> None:
    """Delete each copy's object and manifest; a copy on a target no longer configured
    is left (and logged), since nothing here can reach it."""
    for copy in backup.copies:
        dest = targets.for_copy(copy.target)
        if dest is None:
            log.warning("copy left on an unconfigured target", backup_id=str(backup.id),
                        target=copy.target)
            continue
        for key in dict.fromkeys((backup.storage_key, backup.manifest_key)):
            if key:
                await dest.delete(key)


async def primary_stat(targets: StorageTargets, backup: Backup, key: str
                ) -> tuple[Storage | None, ObjectInfo | None, str | None]:
    """The primary storage, the object's info, and why it could not be asked (if so)."""
    try:
        storage = targets.for_backup(backup)
        return storage, await storage.stat(key), None
    except AppError as exc:
        return None, None, exc.message


async def copy_by_size(targets: StorageTargets, backup: Backup, key: str, size: int | None
                       ) -> tuple[Storage, ObjectInfo, str] | None:
    """The first copy not failed that holds `key` with `size` bytes (None: any size);
    cheap: a stat."""
    for copy in backup.copies:
        dest = targets.for_copy(copy.target)
        if dest is None or copy.verification.state is VerificationState.failed:
            continue
        try:
            info = await dest.stat(key)
        except AppError:
            continue
        if info is not None and (size is None or info.size == size):
            return dest, info, copy.target
    return None
