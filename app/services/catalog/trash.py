"""Deleting a backup on request: the retention minimum, backups in use, and the trash.

A deleted backup keeps its object and manifest in the trash for
`retention.trash_days` (undeletable meanwhile); retention empties the trash.
"""

import structlog
from beanie import PydanticObjectId

from app.config import Settings
from app.errors import ConflictError, InvalidInputError
from app.models.backup import Backup, BackupStatus
from app.models.common import utcnow
from app.models.job import BackupJob, JobStatus
from app.services.catalog.queries import get_backup, update_backup
from app.services.catalog.retention import good_in_series, series_of, series_standing
from app.services.databases.backup import remove_backup
from app.services.storage import Targets, as_targets

log = structlog.get_logger(__name__)
LIVE = [JobStatus.queued.value, JobStatus.running.value]


def _checked_reason(force: bool, reason: str | None) -> str | None:
    reason = (reason or "").strip() or None
    # A reason says something: invisible characters (a zero-width space) alone do not.
    if reason is not None and not any(c.isalnum() for c in reason):
        reason = None
    if force and reason is None:
        raise InvalidInputError("force=true needs a reason saying why",
                                [{"field": "reason", "message": "required with force=true"}])
    return reason


async def _refuse_if_in_use(backup: Backup) -> None:
    if backup.status is BackupStatus.pending:
        raise ConflictError(f"Backup {backup.id} is still being written; cancel its job "
                            f"({backup.job_id}) instead", {"jobId": str(backup.job_id)})
    jobs = await BackupJob.find({"backupId": backup.id, "status": {"$in": LIVE}}).to_list()
    if jobs:
        uses = ", ".join(f"{j.kind.value} job {j.id} ({j.status.value})" for j in jobs)
        raise ConflictError(f"Backup {backup.id} is in use by {uses}; wait for it to finish "
                            "or cancel it first", {"jobs": [str(j.id) for j in jobs]})


def _minimum(settings: Settings, backup: Backup) -> tuple[int, str, str]:
    """The series' minimum, its setting, and what it counts."""
    if series_of(backup) == "dumps":
        return settings.retention.min_count, "retention.min_count", "good backup(s)"
    return settings.pitr.base_min_count, "pitr.base_min_count", "restorable base backup(s)"


async def _refuse_below_minimum(settings: Settings, backup: Backup, good_left: int) -> None:
    minimum, setting, counted = _minimum(settings, backup)
    if good_left >= minimum:
        return
    raise ConflictError(
        f"Deleting backup {backup.id} would leave {good_left} {counted} of source "
        f"{backup.source!r} in its series, below {setting} = {minimum}. To delete it anyway, "
        "repeat the request with force=true and a reason",
        {"source": backup.source, "minCount": minimum, "goodLeft": good_left})


async def delete_backup(settings: Settings, storage: Targets, backup_id: PydanticObjectId,
                        username: str, force: bool = False,
                        reason: str | None = None) -> Backup:
    """Move a backup to the trash (or remove it when trash_days is 0), keeping the minimum.

    With force (and a reason) the minimum is not kept, and a backup already in the
    trash is removed at once."""
    reason = _checked_reason(force, reason)
    storage = as_targets(settings, storage)
    backup = await get_backup(backup_id)
    why = f"deleted by {username}" + (f" (forced: {reason})" if force else
                                      f": {reason}" if reason else "")
    if backup.status is BackupStatus.deleted:
        if not force:
            raise ConflictError(f"Backup {backup_id} is already in the trash; undelete it, or "
                                "remove it now with force=true and a reason")
        await remove_backup(storage, backup, f"removed from the trash: {why}")
        return backup
    await _refuse_if_in_use(backup)
    counted, besides = (False, 0) if force else await series_standing(backup)
    if counted:
        await _refuse_below_minimum(settings, backup, besides)
    previous = backup.status
    moved = await update_backup(
        backup, only_if={"status": previous.value, "deletingSince": None},
        status=BackupStatus.deleted, status_before_delete=previous, deleted_at=utcnow(),
        deleted_by=username, deletion_reason=why)
    if not moved:
        raise ConflictError(f"Backup {backup_id} changed while being deleted; try again")
    if counted:
        # Another deletion may have raced this one: recount, and put it back if short.
        left = await good_in_series(backup.source, series_of(backup))
        if left < _minimum(settings, backup)[0]:
            await _put_back(backup, previous)
            await _refuse_below_minimum(settings, backup, left)
    log.warning("backup moved to the trash", backup_id=str(backup.id), source=backup.source,
                by=username, reason=reason, forced=force, status_before=previous.value)
    if settings.retention.trash_days == 0:
        await remove_backup(storage, backup, f"{why}; no trash (retention.trash_days = 0)")
    return backup


async def _put_back(backup: Backup, status: BackupStatus) -> bool:
    return await update_backup(backup, only_if={"status": BackupStatus.deleted.value,
                                         "deletingSince": None},
                        status=status, status_before_delete=None, deleted_at=None,
                        deleted_by=None, deletion_reason=None)


async def undelete_backup(backup_id: PydanticObjectId, username: str) -> Backup:
    """Take a backup out of the trash, back to the status it had when deleted."""
    backup = await get_backup(backup_id)
    if backup.status is not BackupStatus.deleted or backup.deleting_since is not None:
        raise ConflictError(f"Backup {backup_id} is not in the trash "
                            f"({'being removed' if backup.deleting_since else backup.status})",
                            {"status": backup.status.value})
    previous = backup.status_before_delete or BackupStatus.completed
    deleted_by, why = backup.deleted_by, backup.deletion_reason
    if not await _put_back(backup, previous):
        raise ConflictError(f"Backup {backup_id} left the trash while being undeleted")
    log.warning("backup undeleted", backup_id=str(backup_id), source=backup.source,
                by=username, deleted_by=deleted_by, deletion_reason=why,
                status=previous.value)
    return backup
