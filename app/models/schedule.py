"""Schedules (what runs when) and their fires (one record per schedule and fire time)."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Annotated, Any

from apscheduler.triggers.base import BaseTrigger
from beanie import Document, PydanticObjectId
from bson import ObjectId
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.config import Crontab, TimeZoneName
from app.errors import validation_details
from app.models.common import ApiSchema, document_alias, utcnow
from app.models.job import JobStatus
from app.scheduler.cron import checked_trigger

ScheduleName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
SourceRef = Annotated[str, Field(min_length=1, max_length=63)]


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("sources must not repeat")
    return values


def _unique_targets(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("copy targets must not repeat")
    return values


Sources = Annotated[list[SourceRef], Field(max_length=100), AfterValidator(_unique)]
CopyTargets = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=63)]],
    Field(max_length=16, description="database schedules: storage targets each backup is "
                                     "copied to, besides its source's own copy targets"),
    AfterValidator(_unique_targets)]


class ScheduleKind(StrEnum):
    database = "database"
    content = "content"
    cleanup = "cleanup"
    stats_report = "stats_report"
    health_check = "health_check"
    restore_drill = "restore_drill"
    reverify = "reverify"
    pitr_basebackup = "pitr_basebackup"


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
    # database: extra storage targets each backup is copied to (absent in older documents).
    copy_targets: list[str] = []
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
            IndexModel([("fireTime", ASCENDING)]),  # pruning
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
    copy_targets: CopyTargets = []
    enabled: bool = True
    description: str | None = Field(default=None, max_length=500)


class ScheduleUpdate(ApiSchema):
    """Fields left out keep their value; `null` is refused except for retentionDays."""

    model_config = ConfigDict(extra="forbid")

    cron: Crontab | None = None
    timezone: TimeZoneName | None = None
    sources: Sources | None = None
    retention_days: int | None = Field(
        default=None, ge=1, le=365,
        description="null clears it: backups then use the retention.days setting")
    copy_targets: CopyTargets | None = None
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=500)

    @field_validator("cron", "timezone", "sources", "copy_targets", "enabled", "description",
                     mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for fields the body names: an explicit null would store a None.
        if value is None:
            raise ValueError("must not be null (leave the field out to keep its value)")
        return value


class ScheduleOut(ApiSchema):
    id: PydanticObjectId
    name: str
    kind: ScheduleKind | None = Field(
        description="null only when a stored schedule's kind cannot be read (see error)")
    cron: str
    timezone: str
    sources: list[str]
    retention_days: int | None
    copy_targets: list[str] = []
    enabled: bool
    description: str | None
    created_at: datetime
    updated_at: datetime
    last_fire_at: datetime | None
    error: str | None = Field(
        default=None, description="why this stored schedule cannot run (it is not loaded "
                                  "and never fires until fixed); null when it is fine")


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


@dataclass
class StoredSchedule:
    """One document of the schedules collection, checked on its own: runnable, or why not."""

    raw: dict[str, Any]
    schedule: Schedule | None = None
    trigger: BaseTrigger | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return str(self.raw.get("_id"))

    @property
    def name(self) -> str:
        return str(self.raw.get("name", self.key))


def describe_error(exc: ValidationError) -> str:
    return "; ".join(f"{d['field'] or 'document'}: {d['message']}"
                     for d in validation_details(list(exc.errors())))


def check_stored(raw: dict[str, Any], allow_sub_minute: bool) -> StoredSchedule:
    entry = StoredSchedule(raw)
    try:
        entry.schedule = Schedule.model_validate(raw)
        entry.trigger = checked_trigger(entry.schedule.cron, entry.schedule.timezone,
                                        allow_sub_minute=allow_sub_minute)
    except ValidationError as exc:
        entry.error = describe_error(exc)
    except Exception as exc:  # whatever one document holds, the others still load
        entry.error = str(exc) or type(exc).__name__
    return entry


@cache
def _adapter(field: str) -> TypeAdapter[Any]:
    annotation = ScheduleOut.model_fields[field].annotation
    assert annotation is not None
    return TypeAdapter(annotation)


def _lenient_view(raw: dict[str, Any], error: str | None) -> ScheduleOut | None:
    """As much of an unreadable document as each field allows, the rest as placeholders."""
    if not isinstance(raw.get("_id"), ObjectId):
        return None
    oid = PydanticObjectId(raw["_id"])
    created = oid.generation_time
    fallback: dict[str, Any] = {
        "name": str(oid), "kind": None, "cron": "", "timezone": "", "sources": [],
        "retention_days": None, "copy_targets": [], "enabled": False, "description": None,
        "created_at": created, "updated_at": created, "last_fire_at": None}
    values: dict[str, Any] = {}
    for field, default in fallback.items():
        try:
            values[field] = _adapter(field).validate_python(raw[to_camel(field)])
        except (KeyError, ValidationError):
            values[field] = default
    return ScheduleOut(id=oid, error=error, **values)


def schedule_out(entry: StoredSchedule) -> ScheduleOut | None:
    """The API form of a stored schedule, with its error if it cannot run."""
    if entry.schedule is None:
        return _lenient_view(entry.raw, entry.error)
    out = ScheduleOut.model_validate(entry.schedule, from_attributes=True)
    return out.model_copy(update={"error": entry.error})
