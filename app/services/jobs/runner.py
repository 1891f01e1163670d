"""Running jobs: claim queued ones with a lease, heartbeat, report progress, finish them."""

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from beanie import PydanticObjectId
from pymongo import ReturnDocument

from app.config import Settings
from app.errors import AppError
from app.models.common import utcnow
from app.models.job import (
    CANCELLED_BY,
    FINISHED_JOB_STATUSES,
    RETRYABLE_KINDS,
    BackupJob,
    JobKind,
    JobStatus,
    JobTrigger,
)
from app.models.job_params import JobParams, checked_params
from app.services.catalog.queries import get_job
from app.services.storage import Storage, StorageTargets, as_targets

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 1.0
FINISH_ATTEMPTS = 5
POLL_SECONDS = 1.0


def default_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Progress:
    """Counters a running job updates in memory; the heartbeat stores them."""

    phase: str = "starting"
    bytes_read: int = 0
    bytes_written: int = 0
    items_done: int = 0
    items_total: int | None = None
    message: str | None = None
    listeners: list[Callable[["Progress"], None]] = field(default_factory=list)

    def add_read(self, n: int) -> None:
        self.bytes_read += n
        self._notify()

    def add_written(self, n: int) -> None:
        self.bytes_written += n
        self._notify()

    def set_phase(self, phase: str, message: str | None = None) -> None:
        self.phase, self.message = phase, message
        self._notify()

    def _notify(self) -> None:
        for listener in self.listeners:
            listener(self)

    def document(self) -> dict[str, Any]:
        return {"phase": self.phase, "bytesRead": self.bytes_read,
                "bytesWritten": self.bytes_written, "itemsDone": self.items_done,
                "itemsTotal": self.items_total, "message": self.message}


@dataclass
class JobContext:
    job: BackupJob
    settings: Settings
    storage: Storage  # the default target
    progress: Progress
    targets: StorageTargets | None = None  # every named target; None: `storage` alone

    @property
    def all_targets(self) -> StorageTargets:
        return self.targets or as_targets(self.settings, self.storage)

    async def attach_backup(self, backup_id: PydanticObjectId | None) -> None:
        self.job.backup_id = backup_id
        await _collection().update_one({"_id": self.job.id},
                                       {"$set": {"backupId": backup_id, "updatedAt": utcnow()}})


Handler = Callable[[JobContext], Awaitable[dict[str, Any]]]
# Called with each job this replica finished (or the sweep interrupted), as stored.
FinishListener = Callable[[BackupJob], Awaitable[None]]


def _collection() -> Any:
    return BackupJob.get_pymongo_collection()


def error_text(exc: BaseException) -> str:
    """What failed, in words: a job's error is read by users, not by Python programmers."""
    # Imported here so this function stays the only part of the module that needs them.
    from asyncpg import InterfaceError, PostgresError
    from botocore.exceptions import BotoCoreError, ClientError
    from httpx import HTTPError
    from pymongo.errors import PyMongoError

    message = str(exc).strip()
    if isinstance(exc, AppError):
        return exc.message
    if isinstance(exc, TimeoutError):  # before OSError, of which it is a kind
        return "The job timed out"
    if isinstance(exc, PostgresError | InterfaceError | PyMongoError):
        # pymongo appends the server's whole reply; the message before it says what failed.
        message = message.split(", full error:")[0]
        return f"Database error: {message or 'no message'}"
    if isinstance(exc, OSError | HTTPError | BotoCoreError | ClientError):
        if isinstance(exc, OSError) and exc.strerror:  # not "[Errno 28] ..."
            message = exc.strerror + (f": {exc.filename}" if exc.filename else "")
        return f"Storage or network error: {message or 'no message'}"
    if isinstance(exc, MemoryError):
        return "Out of memory"
    if isinstance(exc, ValueError | RuntimeError) and message:
        return message
    return f"Internal error: {message}" if message else "Internal error (see the service log)"


class JobRunner:
    """Runs queued jobs of the catalog, at most `max_concurrent_jobs` at a time."""

    def __init__(self, settings: Settings, storage: Storage,
                 handlers: dict[JobKind, Handler], replica_id: str | None = None,
                 runs_own_jobs: bool = False, targets: StorageTargets | None = None) -> None:
        """`runs_own_jobs`: what this runner submits is held for it (the CLI's way), so a
        server sharing the catalog cannot claim it first."""
        self.runs_own_jobs = runs_own_jobs
        self.settings = settings
        self.storage = storage
        self.targets = targets or as_targets(settings, storage)
        self.handlers = handlers
        self.replica_id = replica_id or settings.system.replica_id or default_replica_id()
        self.lease = timedelta(seconds=settings.system.lease_seconds)
        self.active: dict[PydanticObjectId, asyncio.Task[None]] = {}
        self.progress: dict[PydanticObjectId, Progress] = {}
        # The task running each job's handler here, and why a job was cancelled.
        self.handler_tasks: dict[PydanticObjectId, asyncio.Task[Any]] = {}
        self.cancel_reasons: dict[PydanticObjectId, str] = {}
        self.finish_listeners: list[FinishListener] = []
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._paused = False
        self._claiming = asyncio.Lock()  # held while the loop claims and launches

    async def submit(self, kind: JobKind, params: JobParams | dict[str, Any], *,
                     source: str | None = None,
                     trigger: JobTrigger = JobTrigger.api,
                     requested_by: PydanticObjectId | None = None,
                     backup_id: PydanticObjectId | None = None,
                     schedule_id: PydanticObjectId | None = None,
                     fire_id: PydanticObjectId | None = None) -> BackupJob:
        """Queue a job; its params are validated against its kind's model first."""
        # The submitter's retry policy travels with the job to whichever replica sweeps it.
        attempts = self.settings.limits.job_attempts if kind in RETRYABLE_KINDS else 1
        job = BackupJob(kind=kind, params=checked_params(kind, params), source=source,
                        trigger=trigger, requested_by=requested_by, backup_id=backup_id,
                        schedule_id=schedule_id, fire_id=fire_id, max_attempts=attempts)
        await self.enqueue(job)
        return job

    async def enqueue(self, job: BackupJob) -> None:
        """Insert a queued job (or one already held by this runner) and wake the loop."""
        if self.runs_own_jobs:
            now = utcnow()
            job.status, job.lease_owner, job.attempts = JobStatus.running, self.replica_id, 1
            job.lease_expires_at, job.heartbeat_at, job.started_at = now + self.lease, now, now
        await job.insert()
        self._wake.set()
        log.info("job queued", job_id=str(job.id), kind=job.kind.value, source=job.source)

    def start(self) -> None:
        """Claim queued jobs (again, after `pause`)."""
        self._paused = False
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="job-runner")
        self._wake.set()

    async def pause(self) -> None:
        """Claim no more jobs until `start` (those running here go on); returns once no
        claim is under way, so none lands after it."""
        self._paused = True
        async with self._claiming:
            pass

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        tasks = list(self.active.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                async with self._claiming:
                    while not self._paused and \
                            len(self.active) < self.settings.limits.max_concurrent_jobs:
                        job = await self.claim()
                        if job is None:
                            break
                        self._launch(job)
            except Exception:
                log.exception("job runner could not claim work")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            except TimeoutError:
                pass

    def _launch(self, job: BackupJob) -> None:
        assert job.id is not None
        job_id = job.id
        task = asyncio.create_task(self.execute(job), name=f"job-{job_id}")
        self.active[job_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self.active.pop(job_id, None)
            self._wake.set()

        task.add_done_callback(done)

    async def claim(self, job_id: PydanticObjectId | None = None) -> BackupJob | None:
        """Take the oldest queued job (or the given one) with a lease, atomically."""
        running = await _collection().count_documents(
            {"status": JobStatus.running.value, "leaseExpiresAt": {"$gt": utcnow()}})
        if running >= self.settings.limits.max_concurrent_jobs and job_id is None:
            return None
        now = utcnow()
        query: dict[str, Any] = {"status": JobStatus.queued.value}
        if job_id is not None:
            query["_id"] = job_id
        raw = await _collection().find_one_and_update(
            query,
            {"$set": {"status": JobStatus.running.value, "leaseOwner": self.replica_id,
                      "leaseExpiresAt": now + self.lease,
                      "heartbeatAt": now, "startedAt": now, "updatedAt": now},
             "$inc": {"attempts": 1}},
            sort=[("createdAt", 1), ("_id", 1)], return_document=ReturnDocument.AFTER)
        return BackupJob.model_validate(raw) if raw else None

    async def execute(self, job: BackupJob) -> None:
        """Run a claimed job to its end; its final state is written whatever happens."""
        assert job.id is not None
        progress = Progress()
        self.progress[job.id] = progress
        ctx = JobContext(job, self.settings, self.storage, progress, self.targets)
        stop_beat = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(job.id, progress, stop_beat))
        status, error, result = JobStatus.failed, None, {}
        task = asyncio.current_task()
        if task is not None:
            self.handler_tasks[job.id] = task
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                raise AppError(f"No handler for {job.kind.value} jobs")
            log.info("job started", job_id=str(job.id), kind=job.kind.value)
            result = await handler(ctx)
            status = JobStatus.completed
        except asyncio.CancelledError:
            error = self.cancel_reasons.get(job.id)
            if error is None:
                status, error = JobStatus.interrupted, "The service stopped while the job ran"
                raise
            # Cancelled on request: a failure like any other, and this task goes on.
            if task is not None:
                task.uncancel()
            log.warning("job cancelled", job_id=str(job.id), kind=job.kind.value, error=error)
        except Exception as exc:
            error = self.cancel_reasons.get(job.id) or error_text(exc)
            log.warning("job failed", job_id=str(job.id), kind=job.kind.value, error=error)
        finally:
            self.handler_tasks.pop(job.id, None)
            self.cancel_reasons.pop(job.id, None)
            # Let a heartbeat write in flight finish rather than race the final one.
            stop_beat.set()
            try:
                await asyncio.wait_for(asyncio.shield(beat), HEARTBEAT_SECONDS * 5)
            except BaseException:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
            progress.phase = status.value
            recorded = await asyncio.shield(
                self._finish(job.id, status, error, result, progress))
            self.progress.pop(job.id, None)
            log.info("job finished", job_id=str(job.id), status=status.value, recorded=recorded)
            if recorded:
                job.status, job.error, job.result = status, error, result
                job.finished_at = utcnow()
                await asyncio.shield(self.announce(job))

    async def announce(self, job: BackupJob) -> None:
        """Tell the finish listeners; a failing listener never changes the job's outcome."""
        for listener in self.finish_listeners:
            try:
                await listener(job)
            except Exception:
                log.exception("a job finish listener failed", job_id=str(job.id))

    async def _finish(self, job_id: PydanticObjectId, status: JobStatus, error: str | None,
                      result: dict[str, Any], progress: Progress) -> bool:
        now = utcnow()
        final: dict[str, Any] = {"status": status.value, "error": error, "finishedAt": now,
                                 "updatedAt": now, "leaseExpiresAt": None}
        # A job the sweep interrupted (its lease lapsed) is not ours to finish any more.
        mine = {"_id": job_id, "leaseOwner": self.replica_id, "status": JobStatus.running.value}
        update: dict[str, Any] = {**final, "result": result, "progress": progress.document()}
        for attempt in range(FINISH_ATTEMPTS):
            try:
                done = await _collection().update_one(mine, {"$set": update})
            except Exception as exc:
                # The outcome must land even when its details cannot be stored.
                log.exception("could not record a job's result", job_id=str(job_id))
                final["error"] = "; ".join(filter(None, [error, f"result not recorded: {exc}"]))
                update = final
                continue
            if done.matched_count:
                return True
            # No match: either the sweep took the job (not ours any more), or the server
            # lost this write to the heartbeat's last one racing it (FerretDB does).
            if await _collection().count_documents(mine) == 0:
                return False
            await asyncio.sleep(0.1 * (attempt + 1))
        return False

    async def _heartbeat(self, job_id: PydanticObjectId, progress: Progress,
                         stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)
                return
            except TimeoutError:
                pass
            now = utcnow()
            try:
                beat = await _collection().find_one_and_update(
                    {"_id": job_id, "leaseOwner": self.replica_id},
                    {"$set": {"progress": progress.document(), "heartbeatAt": now,
                              "leaseExpiresAt": now + self.lease, "updatedAt": now}})
                # A cancel request made on any replica reaches the job here.
                if beat and beat.get("cancelRequestedBy"):
                    self.cancel_here(job_id, CANCELLED_BY + str(beat["cancelRequestedBy"]))
            except Exception:
                # One lost beat is fine; a stopped heartbeat would lose the job's lease.
                log.warning("heartbeat not recorded", job_id=str(job_id), exc_info=True)

    def cancel_here(self, job_id: PydanticObjectId, reason: str) -> bool:
        """Cancel the job's handler if it runs in this process; whether it does."""
        task = self.handler_tasks.get(job_id)
        if task is None:
            return False
        if job_id not in self.cancel_reasons:
            self.cancel_reasons[job_id] = reason
            task.cancel(reason)
        return True

    async def run_now(self, job: BackupJob) -> BackupJob:
        """Run this job in this process: one it holds, or a queued one it can claim."""
        assert job.id is not None
        held = job.status is JobStatus.running and job.lease_owner == self.replica_id
        claimed = job if held else await self.claim(job.id)
        if claimed is None:
            raise AppError(f"Job {job.id} is not queued any more")
        await self.execute(claimed)
        return await get_job(job.id)

    async def wait(self, job_id: PydanticObjectId, timeout: float) -> BackupJob:
        """The job once it has finished, or as it is when timeout passes."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await get_job(job_id)
            if job.status in FINISHED_JOB_STATUSES:
                return job
            if asyncio.get_running_loop().time() >= deadline:
                return job
            await asyncio.sleep(0.2)
