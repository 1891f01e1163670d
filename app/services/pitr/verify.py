"""Verification of a PITR source: every archived WAL object and the newest base backup
against their recorded SHA-256, then (a drill) a restore to the latest time into a private
instance that must reach it and promote; its duration is the RTO. The scheduled restore
drills (recoverability/pitr_drill.py) run the same two steps."""

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from beanie import PydanticObjectId

from app.config import Settings
from app.errors import AppError
from app.models.job import BackupJob, JobKind, JobTrigger
from app.models.job_params import PitrRestoreParams, PitrVerifyParams, params_of
from app.models.wal import WalSegment
from app.services.jobs.runner import JobContext, JobRunner, Progress, error_text
from app.services.pitr.basebackup import pitr_source
from app.services.pitr.restore import restore_source
from app.services.pitr.window import base_backups
from app.services.storage import StorageTargets
from app.services.storage.copies import digest_of


class PitrVerificationFailed(AppError):
    status_code = 409
    code = "pitr_verification_failed"


async def submit_pitr_verify(runner: JobRunner, source: str, drill: bool,
                             requested_by: PydanticObjectId | None,
                             trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `pitr_verify` job of one source."""
    pitr_source(runner.settings, source)
    return await runner.submit(JobKind.pitr_verify, PitrVerifyParams(source=source, drill=drill),
                               source=source, trigger=trigger, requested_by=requested_by)


async def _wal_problem(targets: StorageTargets, seg: WalSegment,
                       progress: Progress) -> str | None:
    """What is wrong with one archived WAL object, if anything. The segment being
    received is re-shipped every partial interval (a new SHA-256) and dropped once whole:
    a partial copy whose record changed or went meanwhile is not damaged."""
    try:
        digest = await digest_of(targets.named(seg.storage_target), seg.key, progress.add_read)
        problem = None if digest.hexdigest == seg.sha256 else \
            f"WAL {seg.segment}{' (partial)' if seg.partial else ''}"
    except AppError as exc:
        problem = f"WAL {seg.segment}: {exc.message}"
    if problem is not None and seg.partial:
        now = await WalSegment.get(seg.id)
        if now is None or now.sha256 != seg.sha256:
            return None
    return problem


async def check_pitr_objects(targets: StorageTargets, source: str,
                             progress: Progress) -> dict[str, Any]:
    """Re-hash every WAL object of a source and its newest base backup. The result's
    `damaged` names each object whose bytes differ from the catalog or cannot be read."""
    segments = await WalSegment.find({"source": source}).to_list()
    progress.set_phase("checking wal")
    progress.items_total = len(segments)
    damaged: list[str] = []
    for seg in segments:
        problem = await _wal_problem(targets, seg, progress)
        if problem is not None:
            damaged.append(problem)
        progress.items_done += 1
    result: dict[str, Any] = {"walChecked": len(segments), "damaged": damaged}
    bases = await base_backups(source)
    if bases:
        newest = bases[-1]
        result["baseBackupId"] = str(newest.id)
        try:
            digest = await digest_of(targets.for_backup(newest), newest.storage_key or "",
                                     progress.add_read)
            if digest.hexdigest != newest.sha256:
                damaged.append(f"base backup {newest.id}")
        except AppError as exc:
            damaged.append(f"base backup {newest.id}: {exc.message}")
    return result


async def run_pitr_verify(ctx: JobContext) -> dict[str, Any]:
    """The `pitr_verify` job handler; fails naming every damaged object."""
    params = params_of(ctx.job, PitrVerifyParams)
    result = await check_pitr_objects(ctx.all_targets, params.source, ctx.progress)
    damaged: list[str] = result["damaged"]
    if params.drill and not damaged:
        ctx.progress.set_phase("drill")
        try:
            restored = await restore_latest(ctx.settings, ctx.all_targets, ctx.progress,
                                            params.source, f"drill-{ctx.job.id}")
        except Exception as exc:
            raise PitrVerificationFailed(f"Drill failed: {error_text(exc)}") from exc
        result.update(drillSeconds=restored["restoreSeconds"],
                      drillWalFiles=restored["walFiles"])
    if damaged:
        raise PitrVerificationFailed(f"{len(damaged)} damaged: " + "; ".join(damaged[:20]),
                                     result)
    return result


async def restore_latest(settings: Settings, targets: StorageTargets, progress: Progress,
                         source: str, name: str) -> dict[str, Any]:
    """Restore to the latest time into a private instance that must promote (`name` names
    its work folder), then stop and remove it. `restoreSeconds` is the time to promotion."""
    started = time.monotonic()
    params = PitrRestoreParams(source=source, latest=True, dry_run=False)
    restored = await restore_source(settings, targets, progress, params, name)
    seconds = round(time.monotonic() - started, 3)
    await asyncio.shield(_stop_and_remove(restored))
    return {"baseBackupId": restored["baseBackupId"], "walFiles": restored["walFiles"],
            "restoreSeconds": seconds}


async def _stop_and_remove(restored: dict[str, Any]) -> None:
    """Stop the restored instance; its folder goes only once it stopped."""
    proc = await asyncio.create_subprocess_exec(*restored["stopCommand"].split(),
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise PitrVerificationFailed(
            f"the restored instance did not stop ({err.decode(errors='replace').strip()}); "
            f"its data directory {restored['dataDir']} is left for a look")
    await asyncio.to_thread(shutil.rmtree, Path(restored["dataDir"]).parent, True)
