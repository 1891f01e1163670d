"""BackupVerification records: one per verification, whoever asked for it."""

from datetime import UTC

from beanie import PydanticObjectId

from app.errors import NotFoundError
from app.models.backup import Backup, Verification, VerificationState
from app.models.common import utcnow
from app.models.job import BackupJob
from app.models.verification import (
    BackupVerification,
    VerificationKind,
    VerificationResult,
    VerificationTrigger,
)


async def record_verification(backup: Backup | PydanticObjectId, result: Verification, *,
                              trigger: VerificationTrigger, duration_s: float,
                              bytes_read: int, job_id: PydanticObjectId | None = None
                              ) -> BackupVerification:
    """Store what one verification found (its outcome is also on the backup itself)."""
    if not isinstance(backup, Backup):
        found = await Backup.get(backup)
        if found is None:  # purged by retention meanwhile: nothing left to record against
            raise NotFoundError(f"Backup {backup} is gone")
        backup = found
    assert backup.id is not None
    record = BackupVerification(
        backup_id=backup.id, source=backup.source or "", job_id=job_id,
        kind=VerificationKind.deep if result.deep else VerificationKind.quick,
        result=(VerificationResult.passed if result.state is VerificationState.passed
                else VerificationResult.failed),
        at=result.checked_at or backup.updated_at, duration_s=max(0.0, duration_s),
        bytes_read=bytes_read, trigger=trigger,
        problems=[p.strip() for p in (result.error or "").split("; ") if p.strip()],
        target=backup.storage_target)
    await record.insert()
    return record


async def record_manual(job: BackupJob, result: Verification, bytes_read: int) -> None:
    """The record of a `verify` job (an admin's request)."""
    assert job.backup_id is not None
    started = job.started_at
    duration = (utcnow() - started.replace(tzinfo=started.tzinfo or UTC)).total_seconds() \
        if started else 0.0
    await record_verification(job.backup_id, result, trigger=VerificationTrigger.manual,
                              duration_s=duration, bytes_read=bytes_read, job_id=job.id)


async def verifications_of(backup_id: PydanticObjectId, limit: int) -> list[BackupVerification]:
    """A backup's verifications, newest first."""
    records = await BackupVerification.find({"backupId": backup_id}).to_list()
    records.sort(key=lambda r: r.at, reverse=True)
    return records[:limit]
