"""One database backup run end to end: dump → compress → encrypt → SHA-256 → storage.

The Backup record stays pending until the artifact and its manifest are durable;
any failure removes what was written and leaves the record failed.
"""

import asyncio
import shutil
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any, BinaryIO

import structlog
from beanie import PydanticObjectId

from app.config import CompressionAlgorithm, Settings, SourceSettings
from app.errors import ConflictError, InvalidInputError, NotFoundError
from app.models.backup import Backup, BackupKind, BackupStatus, BackupType
from app.models.common import utcnow
from app.models.content import ContentItem
from app.models.job import CANCELLED_BY, BackupJob, JobKind, JobTrigger
from app.models.job_params import DatabaseParams, params_of
from app.models.requests import DatabaseBackupCreate
from app.services.access.auth import system_user_id
from app.services.artifacts.bridge import written_in_thread
from app.services.artifacts.compress import CompressingReader, compress, new_compressor
from app.services.artifacts.encrypt import encrypt, encrypt_blocking, parse_recipients
from app.services.artifacts.stages import (
    CHUNK,
    Chunks,
    Digest,
    buffered,
    counted,
    from_bytes,
    limited,
    rechunk,
)
from app.services.catalog.queries import update_backup
from app.services.databases.base import DumpInfo, SourceError
from app.services.databases.kinds import kind_of
from app.services.databases.manifest import (
    ArtifactPlan,
    build_manifest,
    manifest_bytes,
    plan_artifact,
)
from app.services.jobs.runner import JobContext, JobRunner, Progress, error_text
from app.services.recoverability.verification import verify_after_backup
from app.services.storage import Storage, StorageTargets, Targets, as_targets
from app.services.storage.copies import copy_names, copy_to, remove_copies

log = structlog.get_logger(__name__)
MB = 1024 * 1024


def source_or_error(settings: Settings, name: str) -> SourceSettings:
    source = settings.source(name)
    if source is None:
        known = ", ".join(s.name for s in settings.all_sources()) or "none"
        raise InvalidInputError(f"Unknown source {name!r} (configured: {known})",
                                [{"field": "source", "message": "unknown source"}])
    if not source.enabled:
        raise InvalidInputError(f"Source {name!r} is disabled")
    return source


def check_request(settings: Settings, body: DatabaseBackupCreate) -> SourceSettings:
    """Refuse options that do not fit the source's kind, naming the field."""
    source = source_or_error(settings, body.source)
    wrong = kind_of(source.kind).unsupported_options(body)
    if wrong:
        raise InvalidInputError(
            f"{', '.join(wrong)} cannot be used with a {source.kind.value} source",
            [{"field": f, "message": f"not for {source.kind.value} sources"} for f in wrong])
    check_copy_targets(settings, body.copy_targets)
    return source


def check_copy_targets(settings: Settings, names: list[str]) -> None:
    """Each name a configured storage target; a 422 on `copyTargets` naming the others."""
    configured = settings.storage.target_names()
    unknown = [name for name in names if name not in configured]
    if unknown:
        raise InvalidInputError(
            f"Unknown storage target(s) in copyTargets: {', '.join(unknown)} "
            f"(configured: {', '.join(configured)})",
            [{"field": "copyTargets", "message": f"unknown storage target {name!r}"}
             for name in unknown])


async def submit_database_backup(runner: JobRunner, body: DatabaseBackupCreate,
                                 requested_by: PydanticObjectId | None,
                                 trigger: JobTrigger = JobTrigger.api,
                                 backup_type: BackupType = BackupType.manual) -> BackupJob:
    """Queue a `database` job for one source, its options checked first."""
    check_request(runner.settings, body)
    params = DatabaseParams(request=body, backup_type=backup_type)
    return await runner.submit(JobKind.database, params, source=body.source, trigger=trigger,
                               requested_by=requested_by)


def sealed(settings: Settings, plaintext: Chunks, digest: Digest, progress: Progress,
           max_bytes: int | None = None, threads: int | None = None) -> Chunks:
    """Plaintext → compression → age → size limit → SHA-256, as stored (the bandwidth cap
    is the storage's: it holds every read and write)."""
    stream = compress(buffered(counted(plaintext, progress.add_read)),
                      settings.compression.algorithm, settings.compression.chosen_level,
                      settings.compression.threads if threads is None else threads)
    if settings.encryption.enabled:
        stream = encrypt(buffered(stream), list(settings.encryption.recipients))
    return _as_stored(settings, buffered(stream), digest, progress, max_bytes)


def sealed_file(settings: Settings, path: Path, digest: Digest, progress: Progress) -> Chunks:
    """`sealed` of a local file, read, compressed and encrypted in one worker thread: one
    hand-off per stored chunk instead of several per chunk read (WAL shipping's CPU)."""
    algorithm = settings.compression.algorithm
    recipients = parse_recipients(list(settings.encryption.recipients)) \
        if settings.encryption.enabled else None

    read: list[int] = []

    def work(writer: BinaryIO) -> None:
        compressor = None if algorithm is CompressionAlgorithm.none else \
            new_compressor(algorithm, settings.compression.chosen_level, threads=-1)
        with path.open("rb") as source:
            reader = CompressingReader(source, compressor)
            if recipients is None:
                shutil.copyfileobj(reader, writer, CHUNK)
            else:
                encrypt_blocking(recipients, reader, writer)  # type: ignore[arg-type]
        read.append(reader.plain_bytes)

    async def stream() -> Chunks:
        async with aclosing(written_in_thread(work)) as out:
            async for chunk in out:
                yield chunk
        progress.add_read(sum(read))  # here, not in the thread: listeners run on the loop

    return _as_stored(settings, stream(), digest, progress, None)


def _as_stored(settings: Settings, stream: Chunks, digest: Digest, progress: Progress,
               max_bytes: int | None) -> Chunks:
    stream = limited(stream, max_bytes or settings.limits.max_size_mb * MB)
    return counted(digest.tap(stream), progress.add_written)


def dump_stream(settings: Settings, source: SourceSettings, body: DatabaseBackupCreate,
                info: DumpInfo, database: str | None = None) -> Chunks:
    return kind_of(source.kind).dump(settings, source, body, info, database)


async def run_database_backup(ctx: JobContext) -> dict[str, Any]:
    """The `database` job handler."""
    params = params_of(ctx.job, DatabaseParams)
    backup = await back_up(ctx.settings, ctx.all_targets, ctx.progress, params.request,
                           admin=ctx.job.requested_by or await system_user_id(),
                           backup_type=params.backup_type, job_id=ctx.job.id,
                           attach=ctx.attach_backup)
    return {"backupId": str(backup.id), "storedBytes": backup.stored_bytes,
            "plaintextBytes": backup.plaintext_bytes, "sha256": backup.sha256,
            "partial": bool(backup.error), "storageTarget": backup.storage_target,
            "copies": [{"target": c.target, "state": c.verification.state.value,
                        "error": c.verification.error} for c in backup.copies]}


async def back_up(settings: Settings, storage: Targets, progress: Progress,
                  body: DatabaseBackupCreate, *, admin: PydanticObjectId | None,
                  backup_type: BackupType = BackupType.manual,
                  job_id: PydanticObjectId | None = None, database: str | None = None,
                  safety_for: PydanticObjectId | None = None, attach: Any = None) -> Backup:
    """Dump one source to storage; returns the completed Backup or raises.

    `database` overrides the source's own (a pre-restore safety backup of another database
    on the source's server); `safety_for` names the backup whose restore it precedes."""
    source = check_request(settings, body)
    targets = as_targets(settings, storage)
    primary = targets.default
    database_name = database or source.database_name()
    backup, plan = _pending_backup(settings, targets, source, body, database_name,
                                   admin=admin, backup_type=backup_type, job_id=job_id,
                                   safety_for=safety_for)
    await backup.insert()
    if attach is not None:
        await attach(backup.id)
    info = DumpInfo()
    digest = Digest()
    started = time.monotonic()
    try:
        progress.set_phase("dumping")
        stream = sealed(settings, rechunk(dump_stream(settings, source, body, info, database)),
                        digest, progress)
        async with asyncio.timeout(settings.limits.timeout_seconds):
            stored = await primary.put(plan.key, stream)
        progress.set_phase("recording")
        details = _outcome(info, stored, digest, progress, started)
        for name, value in details.items():
            setattr(backup, name, value)
        backup.updated_at = utcnow()
        await primary.put(plan.manifest_key,
                          from_bytes(manifest_bytes(build_manifest(backup, database_name))))
        # Durable now: flip the record in one update, unless the stuck-work sweep
        # gave this backup up meanwhile (it removed the files).
        if not await update_backup(backup, only_if={"status": BackupStatus.pending.value},
                                   status=BackupStatus.completed, **details):
            raise SourceError("The backup was given up as interrupted before it completed")
        log.info("backup completed", backup_id=str(backup.id), source=source.name,
                 stored_bytes=stored, duration_ms=details["duration_ms"])
    except BaseException as exc:
        message = _failure_message(exc, settings)
        await asyncio.shield(discard_backup(targets, backup, message))
        if isinstance(exc, TimeoutError):
            raise SourceError(message) from exc
        raise
    # Durable on the primary: copies come after, and a failed copy is recorded on it,
    # not a failed backup.
    wanted = copy_names([*source.copy_targets, *body.copy_targets], targets.default_name)
    if wanted and safety_for is None:
        progress.set_phase("copying", ", ".join(wanted))
        await make_copies(targets, backup, wanted)
    if safety_for is None:
        await verify_after_backup(settings, targets, backup, progress)
    return backup


def _pending_backup(settings: Settings, targets: StorageTargets, source: SourceSettings,
                    body: DatabaseBackupCreate, database: str, *,
                    admin: PydanticObjectId | None, backup_type: BackupType,
                    job_id: PydanticObjectId | None,
                    safety_for: PydanticObjectId | None) -> tuple[Backup, ArtifactPlan]:
    """The pending record, made with its id so it is written once, already naming its
    artifact."""
    backup_id, created = PydanticObjectId(), utcnow()
    plan = plan_artifact(settings, source.name, source.kind, str(backup_id), created)
    backup = Backup(id=backup_id, created_at=created, admin=admin, type=backup_type,
                    source=source.name, kind=kind_of(source.kind).backup_kind, job_id=job_id,
                    retention_days=body.retention_days or settings.retention.days,
                    notes=body.notes, storage_backend=targets.default.name,
                    storage_target=targets.recorded_name(targets.default_name),
                    options=body.model_dump(mode="json", by_alias=True,
                                            exclude={"source", "notes", "retention_days"}),
                    storage_key=plan.key, manifest_key=plan.manifest_key,
                    format_chain=plan.format_chain, encrypted=plan.encrypted,
                    recipients=plan.recipients, database=database, safety_for=safety_for,
                    server=source.server())
    return backup, plan


def _outcome(info: DumpInfo, stored: int, digest: Digest, progress: Progress,
             started: float) -> dict[str, Any]:
    """What a finished dump records on its backup."""
    partial = "; ".join(f"{name}: {err}" for name, err in sorted(info.errors.items()))
    return dict(
        size_mb=round(stored / MB, 6), sha256=digest.hexdigest, stored_bytes=stored,
        plaintext_bytes=progress.bytes_read,
        duration_ms=int((time.monotonic() - started) * 1000),
        server_version=info.server_version, tool_version=info.tool_version,
        contents=info.contents, error=f"partial: {partial}" if partial else None)


async def make_copies(targets: StorageTargets, backup: Backup, names: list[str]) -> None:
    """Copy a completed backup to each named target, recording each copy as it lands."""
    for name in names:
        copy = await copy_to(targets, backup, name)
        await update_backup(backup, copies=[*backup.copies, copy])


def _failure_message(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, TimeoutError):
        return f"Backup timed out after {settings.limits.timeout_seconds} seconds"
    if isinstance(exc, asyncio.CancelledError):
        return "Backup interrupted: the service stopped"
    return error_text(exc)


async def discard_backup(storage: Targets, backup: Backup, message: str) -> None:
    """Remove whatever a failed or abandoned backup wrote and mark its record failed.

    If its job was cancelled, the cancellation (who) is the message, whatever stopped it."""
    if backup.job_id is not None:
        job = await BackupJob.get_pymongo_collection().find_one(
            {"_id": backup.job_id}, {"cancelRequestedBy": 1})
        if job and job.get("cancelRequestedBy"):
            message = CANCELLED_BY + str(job["cancelRequestedBy"])
    for key in filter(None, (backup.storage_key, backup.manifest_key)):
        try:
            written_to = _target_storage(storage, backup)
            await written_to.discard_incomplete(key)
            await written_to.delete(key)
        except Exception:
            log.exception("could not remove a failed backup's object", key=key)
    # The first reason stands: when the sweep gave the backup up while its writer still
    # ran, the writer's own failure (its partial file removed) is a consequence, not news.
    if await update_backup(backup, only_if={"status": BackupStatus.pending.value},
                           status=BackupStatus.failed, error=message,
                           notes=(backup.notes + "\n" if backup.notes else "")
                           + f"Failed: {message}"):
        log.warning("backup failed", backup_id=str(backup.id), error=message)


def _target_storage(storage: Targets, backup: Backup) -> Storage:
    if isinstance(storage, StorageTargets):
        return storage.for_backup(backup)
    return storage


async def remove_backup(storage: Targets, backup: Backup, reason: str) -> None:
    """Mark the record, remove the stored object, manifest and copies, then the record.

    The mark lets the next retention run finish a removal that was cut short.
    """
    if backup.status is BackupStatus.pending:
        raise ConflictError("A pending backup cannot be deleted while it is being written")
    # A trashed backup is removed only if nobody undeleted it meanwhile.
    still: Any = (BackupStatus.deleted.value if backup.status is BackupStatus.deleted
                  else {"$ne": BackupStatus.pending.value})
    marked = await Backup.get_pymongo_collection().update_one(
        {"_id": backup.id, "status": still},
        {"$set": {"deletingSince": backup.deleting_since or utcnow(),
                  "deletionReason": backup.deletion_reason or reason}})
    if marked.matched_count == 0:
        raise NotFoundError(f"Backup {backup.id} not found (or no longer in the trash)")
    targets = storage if isinstance(storage, StorageTargets) else None
    written_to = _target_storage(storage, backup)
    if targets is not None:
        await remove_copies(targets, backup)
    for key in dict.fromkeys((backup.storage_key, backup.manifest_key)):
        if key:
            await written_to.delete(key)
    if backup.kind is BackupKind.content:
        # The content objects stay until no kept backup references them (retention).
        await ContentItem.find({"backupId": backup.id}).delete()
    await backup.delete()
    log.info("backup deleted", backup_id=str(backup.id), source=backup.source, reason=reason)
