"""Content backups: list a source's items, store each verified item once by its content
address, and record the backup as a manifest of its items; and the full backup (every
database, then every content source, in one job).

Every backup after the first is incremental: an IPFS item already stored is not
fetched again, nor a Gaia file whose ETag has not changed.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import structlog
from beanie import PydanticObjectId

from app.config import ContentSourceSettings, ContentType, Settings
from app.errors import AppError, InvalidInputError
from app.models.backup import Backup, BackupStatus, BackupType
from app.models.content import ContentBackupCreate, ContentItem, FullBackupCreate
from app.models.job import BackupJob, JobKind, JobTrigger
from app.models.job_params import ContentParams, FullParams, params_of
from app.models.requests import DatabaseBackupCreate
from app.services.access.auth import system_user_id
from app.services.content import gaia
from app.services.content.fetch import Run, back_up_item
from app.services.content.items import content_source_or_error, ipfs_addresses, list_items
from app.services.content.outbound import outbound_for
from app.services.content.record import new_backup, record_backup
from app.services.databases.backup import back_up, discard_backup, source_or_error
from app.services.jobs.runner import JobContext, JobRunner, Progress, error_text
from app.services.recoverability.verification import verify_after_backup
from app.services.storage import Targets, as_targets

log = structlog.get_logger(__name__)
T = TypeVar("T")
# Items in progress per fetch slot: the rest of an item's time is catalog and storage work.
ITEMS_PER_FETCH = 4

__all__ = ["back_up_content", "content_result", "outbound_for", "run_content_backup",
           "run_full_backup", "submit_content_backup", "submit_full_backup"]


async def submit_content_backup(runner: JobRunner, body: ContentBackupCreate,
                                requested_by: PydanticObjectId | None,
                                trigger: JobTrigger = JobTrigger.api,
                                backup_type: BackupType = BackupType.manual) -> BackupJob:
    """Queue a `content` job for one content source."""
    content_source_or_error(runner.settings, body.source)
    params = ContentParams(request=body, backup_type=backup_type)
    return await runner.submit(JobKind.content, params, source=body.source, trigger=trigger,
                               requested_by=requested_by)


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


async def _back_up_items(run: Run, source: ContentSourceSettings,
                         backup_id: PydanticObjectId) -> list[ContentItem]:
    """List the source's items, then store each (a failure is recorded on its item)."""
    settings, progress = run.settings, run.progress
    progress.set_phase("listing")
    if source.type is ContentType.gaia:
        run.prefixes = await gaia.read_prefixes(run.outbound, settings.content)
    references = [r async for r in list_items(settings, source, run.outbound)]
    if source.type is ContentType.ipfs:
        await run.objects.preload(ipfs_addresses(references))
    progress.items_total = len(references)
    progress.set_phase("fetching")
    items = await bounded(settings.content.concurrency * ITEMS_PER_FETCH, [
        partial(back_up_item, run, source, backup_id, ref, origin)
        for ref, origin in references])
    await run.objects.record_new()
    if items:
        await ContentItem.insert_many(list(items))
    return items


async def _abandon(run: Run, backup: Backup, exc: BaseException) -> None:
    """Undo a content backup that did not finish, keeping the objects it stored."""
    message = error_text(exc) if not isinstance(exc, asyncio.CancelledError) else \
        "Backup interrupted: the service stopped"
    for task in run.inflight.values():
        task.cancel()
    try:  # what was stored is verified and durable: keep it findable
        await asyncio.shield(run.objects.record_new())
    except Exception:
        log.exception("could not record stored content objects")
    await asyncio.shield(ContentItem.find({"backupId": backup.id}).delete())
    await asyncio.shield(discard_backup(run.targets, backup, message))


async def back_up_content(settings: Settings, storage: Targets, progress: Progress,
                          body: ContentBackupCreate, *, admin: PydanticObjectId,
                          backup_type: BackupType = BackupType.manual,
                          job_id: PydanticObjectId | None = None) -> Backup:
    """Back up every item of one content source to the default target; returns the Backup."""
    source = content_source_or_error(settings, body.source)
    targets = as_targets(settings, storage)
    backup = await new_backup(settings, targets, source, body, admin, backup_type, job_id)
    assert backup.id is not None
    started = time.monotonic()
    run = Run(settings, targets, outbound_for(settings), progress,
              asyncio.Semaphore(settings.content.concurrency))
    try:
        items = await _back_up_items(run, source, backup.id)
        progress.set_phase("recording")
        counts = await record_backup(run.storage, backup, items, run.new_bytes, started)
        log.info("content backup finished", backup_id=str(backup.id), source=source.name,
                 **counts, new_bytes=run.new_bytes)
    except BaseException as exc:
        await _abandon(run, backup, exc)
        raise
    finally:
        await run.outbound.close()
    await verify_after_backup(settings, targets, backup, progress)
    return backup


async def run_content_backup(ctx: JobContext) -> dict[str, Any]:
    """The `content` job handler."""
    params = params_of(ctx.job, ContentParams)
    backup = await back_up_content(
        ctx.settings, ctx.all_targets, ctx.progress, params.request,
        admin=ctx.job.requested_by or await system_user_id(),
        backup_type=params.backup_type, job_id=ctx.job.id)
    await ctx.attach_backup(backup.id)
    return content_result(backup)


def content_result(backup: Backup) -> dict[str, Any]:
    """A content job's result; raises when every item failed."""
    counts = {c.name: c.count or 0 for c in backup.contents}
    if backup.status is BackupStatus.failed:
        raise AppError(backup.error or "Every item failed")
    return {"backupId": str(backup.id), "items": sum(counts.values()), **counts,
            "failedItems": counts.get("failed", 0), "storedBytes": backup.stored_bytes,
            "partial": bool(backup.error)}


async def submit_full_backup(runner: JobRunner, body: FullBackupCreate,
                             requested_by: PydanticObjectId | None,
                             trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `full` job: the given (or every enabled) database and content sources."""
    settings = runner.settings
    databases = (body.sources if body.sources is not None
                 else settings.enabled_database_sources())
    contents = (body.content_sources if body.content_sources is not None
                else settings.content_source_names())
    for name in databases:
        source_or_error(settings, name)
    for name in contents:
        content_source_or_error(settings, name)
    if not databases and not contents:
        raise InvalidInputError("Nothing to back up: no database or content source")
    params = FullParams(sources=databases, content_sources=contents, notes=body.notes,
                        retention_days=body.retention_days)
    return await runner.submit(JobKind.full, params, trigger=trigger, requested_by=requested_by)


async def run_full_backup(ctx: JobContext) -> dict[str, Any]:
    """The `full` job handler: each database source, then each content source, in one job.

    A source that fails does not stop the others; the job fails only if all did."""
    params = params_of(ctx.job, FullParams)
    admin = ctx.job.requested_by or await system_user_id()
    notes, retention = params.notes, params.retention_days
    outcomes: list[dict[str, Any]] = []
    for name in params.sources:
        ctx.progress.set_phase("database", name)
        try:
            backup = await back_up(ctx.settings, ctx.all_targets, ctx.progress,
                                   DatabaseBackupCreate(source=name, notes=notes,
                                                        retention_days=retention), admin=admin,
                                   job_id=ctx.job.id)
            outcomes.append({"source": name, "backupId": str(backup.id), "status": "completed"})
        except Exception as exc:
            outcomes.append({"source": name, "status": "failed", "error": error_text(exc)})
    for name in params.content_sources:
        ctx.progress.set_phase("content", name)
        try:
            backup = await back_up_content(ctx.settings, ctx.all_targets, ctx.progress,
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
