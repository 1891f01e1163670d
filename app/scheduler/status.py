"""A schedule's last run (its newest fire and that fire's jobs, with their outcome) and
its next run."""

from datetime import datetime

from beanie import PydanticObjectId

from app.config import Settings
from app.models.common import utcnow
from app.models.job import FINISHED_JOB_STATUSES, BackupJob, JobStatus
from app.models.schedule import FireStatus, LastRun, ScheduleFire, ScheduleStatus, schedule_out
from app.scheduler.schedules import load_schedules


def _outcome(jobs: list[BackupJob]) -> JobStatus | None:
    newest: dict[str | None, BackupJob] = {}
    for job in sorted(jobs, key=lambda j: j.created_at):
        newest[job.source] = job
    states = {job.status for job in newest.values()}
    for live in (JobStatus.running, JobStatus.queued):
        if live in states:
            return live
    for bad in (JobStatus.failed, JobStatus.interrupted):
        if bad in states:
            return bad
    return JobStatus.completed if states else None


async def last_run(schedule_id: PydanticObjectId) -> LastRun | None:
    fire = await ScheduleFire.find({"scheduleId": schedule_id}).sort("-fireTime").first_or_none()
    if fire is None:
        return None
    jobs = await BackupJob.find({"fireId": fire.id}).to_list() if fire.id else []
    return LastRun(
        fire_time=fire.fire_time, status=fire.status, catch_up=fire.catch_up,
        missed_count=fire.missed_count,
        outcome=_outcome(jobs) if fire.status is not FireStatus.missed else None,
        jobs=[{"id": str(j.id), "source": j.source, "status": j.status.value,
               "error": j.error, "retryOf": str(j.retry_of) if j.retry_of else None,
               "finishedAt": j.finished_at if j.status in FINISHED_JOB_STATUSES else None}
              for j in jobs])


async def schedule_status(now: datetime | None = None,
                          settings: Settings | None = None) -> list[ScheduleStatus]:
    """Each schedule with its last run, that run's outcome, and its next run.

    A schedule that cannot run shows its error and no next run; the others are unaffected.
    Without settings, sub-minute schedules are not reported as errors.
    """
    now = now or utcnow()
    allow_sub_minute = settings.schedules.allow_sub_minute if settings else True
    out = []
    for entry in await load_schedules(allow_sub_minute):
        base = schedule_out(entry)
        if base is None:
            continue
        nxt = None
        if entry.trigger is not None and base.enabled:
            nxt = entry.trigger.get_next_fire_time(None, now)
        out.append(ScheduleStatus(**base.model_dump(), last_run=await last_run(base.id),
                                  next_run=nxt))
    return out
