"""Schedules (what runs when) and their fires (one record per schedule and fire time)."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from beanie import Document, PydanticObjectId
from pydantic import AfterValidator, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.config import Crontab, TimeZoneName
from app.models.common import ApiSchema, document_alias, utcnow
from app.models.job import JobStatus

ScheduleName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
SourceRef = Annotated[str, Field(min_length=1, max_length=63)]


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("sources must not repeat")
    return values


Sources = Annotated[list[SourceRef], Field(max_length=100), AfterValidator(_unique)]


class ScheduleKind(StrEnum):
    database = "database"
    content = "content"
    cleanup = "cleanup"
    stats_report = "stats_report"
    health_check = "health_check"


class Schedule(Document):
    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True,
                              validate_assignment=True)

    name: ScheduleName
    kind: ScheduleKind
    cron: Crontab
    timezone: TimeZoneName = "UTC"
    # database or content: the sources to back up; empty means every one of that kind.
    sources: list[str] = []
    retention_days: int | None = Field(default=None, ge=1, le=365)
    enabled: bool = True
    description: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Newest fire time that was run or recorded as missed: where catch-up starts.
    last_fire_at: datetime | None = None

    class Settings:
        name = "schedules"
        indexes = [IndexModel([("name", ASCENDING)], unique=True, name="name_unique")]


class FireStatus(StrEnum):
    claimed = "claimed"        # a replica won the fire and is starting its jobs
    dispatched = "dispatched"  # its jobs are queued
    missed = "missed"          # no replica ran it in time


class ScheduleFire(Document):
    """The unique lease of one fire: only the replica whose insert succeeds runs it."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    schedule_id: PydanticObjectId
    schedule_name: str
    fire_time: datetime
    status: FireStatus = FireStatus.claimed
    replica: str | None = None
    catch_up: bool = False
    job_ids: list[PydanticObjectId] = []
    missed_count: int = 0
    missed_from: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "schedule_fires"
        indexes = [
            IndexModel([("scheduleId", ASCENDING), ("fireTime", DESCENDING)], unique=True,
                       name="schedule_fire_unique"),
            IndexModel([("status", ASCENDING), ("createdAt", ASCENDING)]),
        ]


class ScheduleCreate(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    name: ScheduleName
    kind: ScheduleKind
    cron: Crontab = Field(description="crontab: minute hour day month weekday (0 and 7 are "
                                      "Sunday); an optional leading field of seconds")
    timezone: TimeZoneName = "UTC"
    sources: Sources = []
    retention_days: int | None = Field(default=None, ge=1, le=365)
    enabled: bool = True
    description: str | None = Field(default=None, max_length=500)


class ScheduleUpdate(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    cron: Crontab | None = None
    timezone: TimeZoneName | None = None
    sources: Sources | None = None
    retention_days: int | None = Field(default=None, ge=1, le=365)
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=500)


class ScheduleOut(ApiSchema):
    id: PydanticObjectId
    name: str
    kind: ScheduleKind
    cron: str
    timezone: str
    sources: list[str]
    retention_days: int | None
    enabled: bool
    description: str | None
    created_at: datetime
    updated_at: datetime
    last_fire_at: datetime | None


class LastRun(ApiSchema):
    fire_time: datetime
    status: FireStatus
    outcome: JobStatus | None = Field(
        description="queued/running while any job is; else failed if any job failed or was "
                    "interrupted (newest attempt per source), else completed; null if missed")
    catch_up: bool
    missed_count: int
    jobs: list[dict[str, Any]]


class ScheduleStatus(ScheduleOut):
    last_run: LastRun | None
    next_run: datetime | None
