"""Restore a source to a moment: the base backup unpacked into a new data directory, its
WAL fetched and checked into a staging folder, a private PostgreSQL started with
`recovery_target_*` and promoted; then left running, or one database copied out of it."""

import asyncio
import shutil
import socket
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from beanie import PydanticObjectId
from pydantic import Field

from app.config import Settings, SourceSettings
from app.errors import ConflictError, InvalidInputError
from app.models.backup import Backup
from app.models.common import ApiSchema
from app.models.job import BackupJob, JobKind, JobTrigger
from app.models.job_params import PitrRestoreParams, params_of
from app.models.wal import PitrRestoreMode, PitrRestoreRequest, WalSegment
from app.services.jobs.runner import JobContext, JobRunner, Progress
from app.services.pitr.basebackup import pitr_source
from app.services.pitr.instance import PrivateInstance, unpack_base
from app.services.pitr.ship import fetch_to
from app.services.pitr.walnames import parse_lsn, segment_number
from app.services.pitr.window import base_backups, source_window, wal_segments
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)
UNPACK_MB_PER_SECOND = 100.0


class PitrRestorePlan(ApiSchema):
    source: str
    dry_run: bool = True
    base_backup_id: str
    base_backup_stop_time: datetime
    target: str
    wal_segments: int
    wal_bytes: int = Field(description="stored bytes of WAL to fetch")
    base_bytes: int
    estimated_seconds: float
    mode: PitrRestoreMode
    target_database: str | None = None


def _target_text(request: PitrRestoreRequest) -> str:
    if request.target_time is not None:
        return f"time {request.target_time.isoformat()}"
    if request.target_lsn is not None:
        return f"lsn {request.target_lsn}"
    return "latest"


async def _choose(settings: Settings, source: str,
                  request: PitrRestoreRequest) -> tuple[Backup, list[WalSegment]]:
    """The newest restorable base backup before the target, and the WAL from its start."""
    window = await source_window(settings, source)
    chains = {c.backup_id: c for c in window.base_backups if c.restorable}
    if not chains:
        raise ConflictError(f"Source {source} has no base backup with unbroken WAL")
    if request.target_time is not None and window.latest and window.earliest and not (
            window.earliest <= request.target_time <= window.latest):
        raise InvalidInputError(
            f"targetTime is outside the recoverable window of {source} "
            f"({window.earliest.isoformat()} to {window.latest.isoformat()})",
            [{"field": "targetTime", "message": "outside the recoverable window"}])
    candidates = [b for b in await base_backups(source) if str(b.id) in chains]
    if request.target_time is not None:
        candidates = [b for b in candidates
                      if chains[str(b.id)].stop_time <= request.target_time]
    if request.target_lsn is not None:
        lsn = parse_lsn(request.target_lsn)
        candidates = [b for b in candidates if parse_lsn(b.options["pitr"]["stopLsn"]) <= lsn]
    if not candidates:
        raise InvalidInputError("No base backup ends before the target",
                                [{"field": "targetTime", "message": "before the window"}])
    base = candidates[-1]
    chain = chains[str(base.id)]
    segments = await wal_segments(source)
    history = [s for s in segments if s.history]
    first, last = chain.start_wal, chain.reaches or chain.stop_wal
    wanted: dict[str, WalSegment] = {}  # one per file: the whole segment over its partial
    for s in segments:
        if not s.history and segment_number(first) <= segment_number(s.segment) \
                <= segment_number(last) and (s.segment not in wanted or not s.partial):
            wanted[s.segment] = s
    return base, history + [wanted[name] for name in sorted(wanted)]


async def plan_restore(settings: Settings, source: str,
                       request: PitrRestoreRequest) -> PitrRestorePlan:
    """Which base backup, how much WAL, an estimate of the time (no change anywhere)."""
    source_settings = pitr_source(settings, source)
    if request.mode is PitrRestoreMode.copy:
        check_copy_target(settings, source_settings, request)
    base, wal = await _choose(settings, source, request)
    wal_plain = sum(s.size for s in wal)
    estimate = ((base.plaintext_bytes or 0) / 1e6 / UNPACK_MB_PER_SECOND
                + wal_plain / 1e6 / settings.pitr.replay_mb_per_second + 5)
    return PitrRestorePlan(
        source=source, dry_run=request.dry_run, base_backup_id=str(base.id),
        base_backup_stop_time=datetime.fromisoformat(base.options["pitr"]["stopTime"]),
        target=_target_text(request), wal_segments=len(wal),
        wal_bytes=sum(s.stored_bytes for s in wal), base_bytes=base.stored_bytes or 0,
        estimated_seconds=round(estimate, 1), mode=request.mode,
        target_database=request.target_database)


def check_copy_target(settings: Settings, source: SourceSettings,
                      request: PitrRestoreRequest) -> None:
    from app.services.databases.restore import refuse_protected

    target = request.target_database or ""
    refuse_protected(settings, source, target)
    if target == source.database_name():
        raise InvalidInputError("targetDatabase must not be the source's own database",
                                [{"field": "targetDatabase", "message": "the live database"}])


async def submit_restore(runner: JobRunner, source: str, request: PitrRestoreRequest,
                         requested_by: PydanticObjectId | None,
                         trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `pitr_restore` job (the caller has planned it)."""
    params = PitrRestoreParams.model_validate({**request.model_dump(), "source": source})
    return await runner.submit(JobKind.pitr_restore, params, source=source, trigger=trigger,
                               requested_by=requested_by)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_pitr_restore(ctx: JobContext) -> dict[str, Any]:
    """The `pitr_restore` job handler."""
    params = params_of(ctx.job, PitrRestoreParams)
    return await restore_source(ctx.settings, ctx.all_targets, ctx.progress, params,
                                str(ctx.job.id))


async def _fetch_all(settings: Settings, targets: StorageTargets, progress: Progress,
                     source: str, wal: list[WalSegment], folder: Path) -> None:
    for segment in wal:
        # By name, just before it is read: the partial copy may have been re-shipped or
        # replaced by the whole segment since the plan.
        await fetch_to(settings, targets, source, segment.segment, folder / segment.segment)
        progress.items_done += 1


async def _alongside(work: Coroutine[Any, Any, None], fetching: asyncio.Task[None]) -> None:
    """`work` (the unpack, the recovery), failed at once if fetching the WAL fails
    meanwhile: recovery must not end early at an older moment for want of a file."""
    task = asyncio.create_task(work)
    try:
        while True:
            error = fetching.exception() if fetching.done() and not fetching.cancelled() \
                else None
            if error is not None:
                raise error
            if task.done():
                return task.result()
            await asyncio.wait({task} if fetching.done() else {task, fetching},
                               return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _recover(instance: PrivateInstance) -> None:
    await instance.start()
    await instance.wait_promoted()


def check_space(settings: Settings, base: Backup, wal: list[WalSegment]) -> None:
    """The restore folder must hold the data directory and the WAL (a tenth spare)."""
    needed = int(((base.plaintext_bytes or 0) + sum(s.size for s in wal)) * 1.1)
    folder = settings.pitr.restore_dir
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConflictError(f"{folder} has {free >> 20} MiB free; this restore needs about "
                            f"{needed >> 20} MiB (base backup and WAL)",
                            {"freeBytes": free, "neededBytes": needed})


async def restore_source(settings: Settings, targets: StorageTargets, progress: Progress,
                         params: PitrRestoreParams, name: str) -> dict[str, Any]:
    """The restore itself; `name` names its work folder under `pitr.restore_dir`. The WAL
    is fetched while the base backup unpacks and while recovery replays it."""
    source = pitr_source(settings, params.source)
    base, wal = await _choose(settings, params.source, params)
    check_space(settings, base, wal)
    work = (settings.pitr.restore_dir / f"{params.source}-{name}").resolve()
    instance = PrivateInstance(settings, work, params.port or free_port())
    keep = False
    instance.expect([s.segment for s in wal])
    fetching = asyncio.create_task(_fetch_all(settings, targets, progress, params.source,
                                              wal, instance.wal_dir))
    try:
        progress.set_phase("unpacking", str(base.id))
        await _alongside(unpack_base(settings, targets, base, instance.data_dir), fetching)
        progress.set_phase("recovering", f"{len(wal)} WAL files")
        instance.configure(params)
        await _alongside(_recover(instance), fetching)
        fetching.cancel()  # promoted: what was not fetched yet is not needed
        result: dict[str, Any] = {"baseBackupId": str(base.id), "walFiles": len(wal),
                                  "port": instance.port, "dataDir": str(instance.data_dir)}
        if params.mode is PitrRestoreMode.inspect:
            keep = True
            result["stopCommand"] = instance.stop_command()
            return result
        check_copy_target(settings, source, params)
        progress.set_phase("copying", params.target_database)
        await instance.copy_database(source, params.database or source.database_name(),
                                     params.target_database or "", params.confirm)
        result.update(targetDatabase=params.target_database, port=None, dataDir=None)
        return result
    finally:
        if not keep:
            instance.release()  # first, and at once: waiting restore_commands give up
        fetching.cancel()
        await asyncio.gather(fetching, return_exceptions=True)
        if not keep:
            await asyncio.shield(instance.stop())
            await asyncio.to_thread(shutil.rmtree, work, True)
