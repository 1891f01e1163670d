"""Verification of a PITR source: every archived WAL object and the newest base backup
against their recorded SHA-256, then (a drill) a restore to the latest time into a private
instance that must reach it and promote; its duration is the RTO."""

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from beanie import PydanticObjectId

from app.errors import AppError
from app.models.job import BackupJob, JobKind, JobTrigger
from app.models.job_params import PitrRestoreParams, PitrVerifyParams, params_of
from app.models.wal import WalSegment
from app.services.jobs.runner import JobContext, JobRunner, error_text
from app.services.pitr.basebackup import pitr_source
from app.services.pitr.restore import restore_source
from app.services.pitr.window import base_backups
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


async def run_pitr_verify(ctx: JobContext) -> dict[str, Any]:
    """The `pitr_verify` job handler; fails naming every damaged object."""
    params = params_of(ctx.job, PitrVerifyParams)
    targets, progress = ctx.all_targets, ctx.progress
    segments = await WalSegment.find({"source": params.source}).to_list()
    progress.set_phase("checking wal")
    progress.items_total = len(segments)
    damaged: list[str] = []
    for seg in segments:
        try:
            digest = await digest_of(targets.named(seg.storage_target), seg.key,
                                     progress.add_read)
            if digest.hexdigest != seg.sha256:
                damaged.append(f"WAL {seg.segment}{' (partial)' if seg.partial else ''}")
        except AppError as exc:
            damaged.append(f"WAL {seg.segment}: {exc.message}")
        progress.items_done += 1
    result: dict[str, Any] = {"walChecked": len(segments), "damaged": damaged}
    bases = await base_backups(params.source)
    if bases:
        newest = bases[-1]
        digest = await digest_of(targets.for_backup(newest), newest.storage_key or "",
                                 progress.add_read)
        result["baseBackupId"] = str(newest.id)
        if digest.hexdigest != newest.sha256:
            damaged.append(f"base backup {newest.id}")
    if params.drill and not damaged:
        result.update(await _drill(ctx, params.source))
    if damaged:
        raise PitrVerificationFailed(f"{len(damaged)} damaged: " + "; ".join(damaged[:20]),
                                     result)
    return result


async def _drill(ctx: JobContext, source: str) -> dict[str, Any]:
    """Restore to the latest time, check the instance promoted, stop and remove it."""
    ctx.progress.set_phase("drill")
    started = time.monotonic()
    params = PitrRestoreParams(source=source, latest=True, dry_run=False)
    try:
        restored = await restore_source(ctx.settings, ctx.all_targets, ctx.progress, params,
                                        f"drill-{ctx.job.id}")
    except Exception as exc:
        raise PitrVerificationFailed(f"Drill failed: {error_text(exc)}") from exc
    seconds = round(time.monotonic() - started, 2)
    proc = await asyncio.create_subprocess_exec(*restored["stopCommand"].split(),
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()
    await asyncio.to_thread(shutil.rmtree, Path(restored["dataDir"]).parent, True)
    return {"drillSeconds": seconds, "drillWalFiles": restored["walFiles"]}
