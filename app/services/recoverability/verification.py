"""The verification policy: each new backup verified once written, and a rolling
re-verification that re-reads every kept backup at least every `reverify_days`."""

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from beanie import PydanticObjectId

from app.config import Settings
from app.errors import AppError
from app.models.backup import GOOD_STATUSES, Backup, Verification, VerificationState
from app.models.common import utcnow
from app.models.verification import VerificationTrigger
from app.services.databases.verify import verify
from app.services.jobs.runner import JobContext, Progress, error_text
from app.services.ops.notify import Event, Message, send
from app.services.recoverability.records import record_verification
from app.services.storage import Targets

log = structlog.get_logger(__name__)
NEVER = datetime.min.replace(tzinfo=UTC)


def _quick_settings(settings: Settings) -> Settings:
    """Settings that cannot open an encrypted backup: verify() then checks size and
    SHA-256 only."""
    return settings.model_copy(update={"encryption": settings.encryption.model_copy(
        update={"identity_file": None})})


async def verify_and_record(settings: Settings, targets: Targets, backup_id: PydanticObjectId,
                            trigger: VerificationTrigger, *, deep: bool = True,
                            job_id: PydanticObjectId | None = None) -> Verification:
    """Run the one verifier on a backup and store its BackupVerification record."""
    progress = Progress()
    started = time.monotonic()
    result = await verify(settings if deep else _quick_settings(settings), targets, backup_id,
                          progress)
    await record_verification(backup_id, result, trigger=trigger,
                              duration_s=time.monotonic() - started,
                              bytes_read=progress.bytes_read, job_id=job_id)
    return result


async def verify_after_backup(settings: Settings, targets: Targets, backup: Backup,
                              progress: Progress) -> None:
    """Verify a backup that has just completed, when the policy says so. Never raises
    (but for cancellation): the backup is written; a problem shows on its record."""
    if not settings.verification.after_backup or backup.id is None:
        return
    progress.set_phase("verifying", "reading the new backup back from storage")
    try:
        backup.verification = await verify_and_record(
            settings, targets, backup.id, VerificationTrigger.after_backup,
            deep=settings.verification.deep_after_backup, job_id=backup.job_id)
    except Exception as exc:
        log.warning("verification after backup not done", backup_id=str(backup.id),
                    error=error_text(exc))
        return
    if backup.verification.state is VerificationState.failed:
        # The job completes (the backup is written), so its own message says "succeeded".
        await send(settings, Message(
            Event.backup_failed, f"Backvault: new backup of {backup.source} failed verification",
            f"backup: {backup.id}\nsource: {backup.source}\n"
            f"problem: {backup.verification.error}", failure=True))


def _checked_at(backup: Backup) -> datetime:
    at = backup.verification.checked_at
    return NEVER if at is None else at.replace(tzinfo=at.tzinfo or UTC)


async def kept_backups() -> list[Backup]:
    """Backups retention keeps that have something stored to re-read."""
    found = await Backup.find({"status": {"$in": [s.value for s in GOOD_STATUSES]}}).to_list()
    return [b for b in found if b.storage_key and b.deleting_since is None]


def due_for_reverify(backups: list[Backup], reverify_days: int, fraction: float,
                     now: datetime) -> list[Backup]:
    """Every backup last checked `reverify_days` or more ago (or never), then the oldest
    checked of the others until `fraction` of all of them is reached."""
    ordered = sorted(backups, key=_checked_at)
    limit = now - timedelta(days=reverify_days)
    due = [b for b in ordered if _checked_at(b) <= limit]
    budget = math.ceil(len(backups) * fraction)
    extra = [b for b in ordered if _checked_at(b) > limit][:max(0, budget - len(due))]
    return due + extra


async def run_reverify(ctx: JobContext) -> dict[str, Any]:
    """The `reverify` job handler: re-read the backups that are due, and a sample more."""
    policy = ctx.settings.verification
    chosen = due_for_reverify(await kept_backups(), policy.reverify_days,
                              policy.sample_fraction, utcnow())
    ctx.progress.items_total = len(chosen)
    passed: list[str] = []
    failed: list[str] = []
    errors: list[dict[str, str]] = []
    for backup in chosen:
        assert backup.id is not None
        ctx.progress.set_phase("verifying", f"backup {backup.id} of {backup.source}")
        try:
            result = await verify_and_record(ctx.settings, ctx.all_targets, backup.id,
                                             VerificationTrigger.rolling, job_id=ctx.job.id)
        except AppError as exc:  # e.g. an identity that cannot open it: nothing recorded
            errors.append({"backupId": str(backup.id), "error": exc.message})
            continue
        (passed if result.state.value == "passed" else failed).append(str(backup.id))
        ctx.progress.items_done += 1
    log.info("rolling re-verification done", verified=len(passed) + len(failed),
             failed=len(failed), errors=len(errors))
    if failed:
        raise ValueError(f"{len(failed)} backup(s) failed re-verification: {', '.join(failed)}")
    return {"verified": passed, "failed": failed, "errors": errors}
