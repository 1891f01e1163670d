"""Schedules: what runs when (edits apply on every replica without a restart)."""

from beanie import PydanticObjectId
from fastapi import APIRouter, status

from app.api.deps import AdminUser, CurrentUser, SettingsDep
from app.models.schedule import ScheduleCreate, ScheduleOut, ScheduleUpdate
from app.scheduler import schedules

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
