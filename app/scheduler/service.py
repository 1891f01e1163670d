"""The in-process scheduler of one replica: APScheduler fires, catch-up, reloads, sweeps.

Every replica runs the same triggers; a fire runs only where `claim_fire`'s
unique insert succeeds, so each (schedule, fire time) runs once in the fleet.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from beanie import PydanticObjectId

from app.models.common import utcnow
from app.models.schedule import FireStatus, Schedule, ScheduleFire, StoredSchedule
from app.scheduler import fires, schedules
from app.services.catalog import managed_sources
from app.services.jobs import recovery
from app.services.jobs.runner import JobRunner

log = structlog.get_logger(__name__)


class FireExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """Passes the scheduled fire times to the job (APScheduler 3 keeps them to itself)."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        task = self._eventloop.create_task(job.func(*job.args, run_times=run_times,
                                                    **job.kwargs))

        def done(finished: asyncio.Task[None]) -> None:
            self._pending_futures.discard(finished)
            exc = None if finished.cancelled() else finished.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, [])

        task.add_done_callback(done)
        self._pending_futures.add(task)


class ScheduleService:
    """Keeps this replica's APScheduler in step with the schedules in the catalog."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.settings = runner.settings
        self.replica = runner.replica_id
        grace = max(1, self.settings.schedules.misfire_grace_seconds)
        self.scheduler = AsyncIOScheduler(
            executors={"default": FireExecutor()},
            job_defaults={"coalesce": True, "max_instances": 10, "misfire_grace_time": grace},
            timezone=self.settings.system.timezone)
        self.loaded: dict[str, tuple[str, str, datetime]] = {}
        self.errors: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Sweep, then (if schedules are on) seed, catch up and start firing."""
        await self.sweep_once()
        if self.settings.system.enabled:
            await schedules.seed_schedules(self.settings)
            await self.catch_up()
            self.scheduler.start()
            await self.reload()
            self._tasks.append(self._every(self.settings.schedules.reload_seconds,
                                           self.reload_and_redispatch, "schedule-reload"))
        sweep_every = max(0.5, self.settings.system.lease_seconds / 3)
        self._tasks.append(self._every(sweep_every, self.sweep_once, "stuck-work-sweep"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def _every(self, seconds: float, step: Callable[[], Awaitable[Any]],
               name: str) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await step()
                except Exception:
                    log.exception("background step failed", step=name)

        return asyncio.create_task(loop(), name=name)

    async def sweep_once(self) -> recovery.SweepReport:
        return await recovery.sweep(self.runner)

    async def reload(self) -> None:
        """Add, change or drop triggers so they match the catalog (edits apply here).

        Each schedule loads on its own: one that cannot run is reported and skipped.
        """
        entries = await schedules.load_schedules(self.settings.schedules.allow_sub_minute)
        wanted = {e.key: e for e in entries
                  if e.error is None and e.schedule is not None and e.schedule.enabled}
        self._report_errors(entries)
        for schedule_id in set(self.loaded) - set(wanted):
            if self.scheduler.get_job(schedule_id) is not None:
                self.scheduler.remove_job(schedule_id)
            del self.loaded[schedule_id]
        for schedule_id, entry in wanted.items():
            schedule = entry.schedule
            assert schedule is not None
            signature = (schedule.cron, schedule.timezone, schedule.updated_at)
            if self.loaded.get(schedule_id) == signature:
                continue
            try:
                self.scheduler.add_job(self._fire, entry.trigger, args=[schedule.id],
                                       id=schedule_id, name=schedule.name,
                                       replace_existing=True)
            except Exception:
                log.exception("schedule not loaded", schedule=schedule.name)
                continue
            self.loaded[schedule_id] = signature

    def _report_errors(self, entries: list[StoredSchedule]) -> None:
        """Log each schedule that cannot run once, and again only when its error changes."""
        errors = {e.key: e.error for e in entries if e.error is not None}
        for entry in entries:
            if entry.error is not None and self.errors.get(entry.key) != entry.error:
                log.warning("schedule cannot run", schedule=entry.name, schedule_id=entry.key,
                            error=entry.error)
        self.errors = errors

    async def reload_and_redispatch(self) -> None:
        # Sources added at runtime on another replica join here, before the fires use them.
        await managed_sources.refresh(self.settings)
        await self.reload()
        await self.redispatch_stalled()

    async def _fire(self, schedule_id: PydanticObjectId,
                    run_times: list[datetime] | None = None) -> None:
        schedule = await schedules.find_schedule(schedule_id)
        if schedule is None or not schedule.enabled or not run_times:
            return
        *coalesced, fire_time = run_times
        await self._run_fire(schedule, coalesced, fire_time)

    async def _run_fire(self, schedule: Schedule, missed: list[datetime],
                        fire_time: datetime | None, catch_up: bool = False) -> None:
        """Record the fires nobody will run, then run this one if this replica wins it."""
        await fires.record_missed(schedule, missed, self.replica)
        if fire_time is None:
            return
        fire = await fires.claim_fire(schedule, fire_time, self.replica, catch_up)
        if fire is not None:
            if catch_up:
                log.info("catching up a missed fire", schedule=schedule.name,
                         fire_time=fire_time.isoformat(), coalesced=len(missed))
            await fires.dispatch(self.runner, schedule, fire)

    async def catch_up(self, now: datetime | None = None) -> None:
        """Fires missed while no replica ran: the newest within the grace period runs
        once; every other one is recorded as missed."""
        now = now or utcnow()
        grace = timedelta(seconds=self.settings.schedules.misfire_grace_seconds)
        for entry in await schedules.load_schedules(self.settings.schedules.allow_sub_minute):
            schedule = entry.schedule
            if entry.error is not None or schedule is None or not schedule.enabled:
                continue  # reload reports it
            try:
                since = max(filter(None, (schedule.last_fire_at, schedule.updated_at)))
                overdue = fires.fires_between(schedule, since, now)
                catch_up = overdue.pop() if overdue and overdue[-1] >= now - grace else None
                await self._run_fire(schedule, overdue, catch_up, catch_up=True)
            except Exception:
                log.exception("catch-up failed", schedule=schedule.name)

    async def redispatch_stalled(self) -> None:
        """Finish fires whose replica stopped between claiming them and queuing jobs."""
        lease = timedelta(seconds=self.settings.system.lease_seconds)
        while True:
            now = utcnow()
            raw = await ScheduleFire.get_pymongo_collection().find_one_and_update(
                {"status": FireStatus.claimed.value, "updatedAt": {"$lt": now - lease}},
                {"$set": {"updatedAt": now, "replica": self.replica}})
            if raw is None:
                return
            # The update moved this fire's lease on, so a failure here is retried after
            # a lease and does not stop the other fires of this round.
            try:
                fire = ScheduleFire.model_validate(raw)
                schedule = await schedules.find_schedule(fire.schedule_id)
                if schedule is not None:
                    await fires.dispatch(self.runner, schedule, fire)
            except Exception:
                log.exception("re-dispatch failed", fire_id=str(raw.get("_id")))
