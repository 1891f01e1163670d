"""Schedules: what runs when (edits apply on every replica without a restart)."""

from datetime import UTC, datetime
from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query, status

from app.api.deps import AdminUser, CurrentUser, SettingsDep
from app.errors import InvalidInputError
from app.models.common import ApiSchema
from app.models.schedule import ScheduleCreate, ScheduleOut, ScheduleUpdate
from app.scheduler import schedules
from app.scheduler.cron import checked_trigger

router = APIRouter(prefix="/api/schedules", tags=["schedules"])


@router.get("", response_model=list[ScheduleOut])
async def list_schedules(settings: SettingsDep, _: CurrentUser) -> list[ScheduleOut]:
    """Every schedule, by name; one that cannot run shows why in `error`."""
    return await schedules.schedule_views(settings)


@router.post("", response_model=ScheduleOut, status_code=status.HTTP_201_CREATED)
async def create_schedule(body: ScheduleCreate, settings: SettingsDep,
                          _: AdminUser) -> ScheduleOut:
    """Add a schedule (admin)."""
    return ScheduleOut.model_validate(await schedules.create_schedule(settings, body))


class CronPreview(ApiSchema):
    cron: str
    timezone: str
    next_runs: list[datetime]


@router.get("/preview", response_model=CronPreview)
async def preview_cron(
        settings: SettingsDep, _: CurrentUser,
        cron: Annotated[str, Query(min_length=1, max_length=100)],
        timezone: Annotated[str, Query(min_length=1, max_length=64)] = "UTC",
        count: Annotated[int, Query(ge=1, le=20)] = 5) -> CronPreview:
    """Check a crontab as a schedule would be checked and give its next fire times; 422
    names what is wrong."""
    try:
        trigger = checked_trigger(cron, timezone,
                                  allow_sub_minute=settings.schedules.allow_sub_minute)
    except ValueError as exc:
        raise InvalidInputError(str(exc), {"cron": cron, "timezone": timezone}) from exc
    runs: list[datetime] = []
    previous: datetime | None = None
    now = datetime.now(UTC)
    while len(runs) < count:
        fire = trigger.get_next_fire_time(previous, previous or now)
        if fire is None:
            break
        runs.append(fire)
        # The next search starts just after this fire.
        previous = fire
    return CronPreview(cron=cron.strip(), timezone=timezone, next_runs=runs)


@router.get("/{schedule_id}", response_model=ScheduleOut)
async def get_schedule(schedule_id: PydanticObjectId, settings: SettingsDep,
                       _: CurrentUser) -> ScheduleOut:
    """One schedule."""
    return await schedules.schedule_view(settings, schedule_id)


@router.patch("/{schedule_id}", response_model=ScheduleOut)
async def update_schedule(schedule_id: PydanticObjectId, body: ScheduleUpdate,
                          settings: SettingsDep, _: AdminUser) -> ScheduleOut:
    """Change a schedule's fields (admin); null clears retentionDays, elsewhere it is a 422."""
    return ScheduleOut.model_validate(
        await schedules.update_schedule(settings, schedule_id, body))


@router.delete("/{schedule_id}", response_model=ScheduleOut)
async def delete_schedule(schedule_id: PydanticObjectId, _: AdminUser) -> ScheduleOut:
    """Remove a schedule (admin); its past runs stay in the job history."""
    return await schedules.delete_schedule(schedule_id)
