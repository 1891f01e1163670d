"""What the schedules run next: the soonest fires, each schedule's sources, per source."""

from dataclasses import dataclass
from datetime import datetime

from apscheduler.triggers.base import BaseTrigger

from app.config import Settings
from app.models.dashboard import NextRun
from app.models.schedule import Schedule, ScheduleKind
from app.scheduler import fires, schedules


@dataclass
class Upcoming:
    schedule: Schedule
    trigger: BaseTrigger
    at: datetime | None


async def enabled_schedules(settings: Settings, now: datetime) -> list[Upcoming]:
    """The enabled schedules that can run, with their next fire after `now`."""
    found = []
    for entry in await schedules.load_schedules(settings.schedules.allow_sub_minute):
        if entry.schedule is None or entry.trigger is None or not entry.schedule.enabled:
            continue
        found.append(Upcoming(entry.schedule, entry.trigger,
                              entry.trigger.get_next_fire_time(None, now)))
    return found


def schedule_sources(settings: Settings, schedule: Schedule) -> list[str]:
    """The sources a fire of this schedule backs up (none for cleanup and reports)."""
    # The scheduler's own rule (its private helper), so this view never disagrees with a fire.
    return [s for s in fires.schedule_targets(settings, schedule) if s is not None]


async def next_runs(settings: Settings, now: datetime, limit: int = 10) -> list[NextRun]:
    """The next fire of each enabled schedule, soonest first."""
    runs = []
    for item in await enabled_schedules(settings, now):
        if item.at is None or item.schedule.id is None:
            continue
        runs.append(NextRun(schedule_id=item.schedule.id, name=item.schedule.name,
                            kind=item.schedule.kind.value,
                            sources=schedule_sources(settings, item.schedule), at=item.at))
    runs.sort(key=lambda r: (r.at, r.name))
    return runs[:limit]


async def next_run_per_source(settings: Settings, now: datetime) -> dict[str, datetime]:
    """For each source, the soonest fire of an enabled schedule that backs it up."""
    soonest: dict[str, datetime] = {}
    for item in await enabled_schedules(settings, now):
        if item.at is None:
            continue
        for source in schedule_sources(settings, item.schedule):
            if source not in soonest or item.at < soonest[source]:
                soonest[source] = item.at
    return soonest


async def cleanup_triggers(settings: Settings, now: datetime) -> list[BaseTrigger]:
    """The triggers of the enabled cleanup schedules."""
    return [item.trigger for item in await enabled_schedules(settings, now)
            if item.schedule.kind is ScheduleKind.cleanup]
