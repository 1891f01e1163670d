"""Schedules: defaults seeded from settings, checks, edits and views (their fires are in
fires.py, their last and next runs in status.py)."""


import structlog
from beanie import PydanticObjectId
from pydantic import ValidationError
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from app.config import Settings
from app.errors import ConflictError, InvalidInputError, NotFoundError, validation_details
from app.models.common import document_alias, utcnow
from app.models.schedule import (
    Schedule,
    ScheduleCreate,
    ScheduleKind,
    ScheduleOut,
    ScheduleUpdate,
    StoredSchedule,
    check_stored,
    describe_error,
    schedule_out,
)
from app.scheduler.cron import checked_trigger
from app.services.databases.backup import check_copy_targets
from app.services.recoverability.drills import check_drill_schedule

log = structlog.get_logger(__name__)
LEGACY_SEEDED = ("daily", "weekly", "monthly", "cleanup", "stats-report", "health-check")
SEEDED_MARKER = "schedules-seeded"

BACKUP_KINDS = (ScheduleKind.database, ScheduleKind.content)


def default_schedules(settings: Settings) -> list[Schedule]:
    """The schedules a fresh catalog starts with (seed 002's and 004's)."""
    s, tz = settings.schedules, settings.system.timezone
    return [
        Schedule(name="daily", kind=ScheduleKind.database, cron=s.daily, timezone=tz,
                 retention_days=s.daily_retention_days, description="Daily database backups"),
        Schedule(name="weekly", kind=ScheduleKind.database, cron=s.weekly, timezone=tz,
                 retention_days=s.weekly_retention_days,
                 description="Weekly database backups"),
        Schedule(name="monthly", kind=ScheduleKind.database, cron=s.monthly, timezone=tz,
                 retention_days=s.monthly_retention_days,
                 description="Monthly database backups"),
        Schedule(name="cleanup", kind=ScheduleKind.cleanup, cron=s.cleanup, timezone=tz,
                 description="Retention cleanup"),
        Schedule(name="stats-report", kind=ScheduleKind.stats_report, cron=s.stats_report,
                 timezone=tz, description="Weekly stats report"),
        Schedule(name="health-check", kind=ScheduleKind.health_check, cron=s.health_check,
                 timezone=tz, description="Monthly health check"),
        Schedule(name="restore-drill", kind=ScheduleKind.restore_drill,
                 cron=settings.drills.schedule, timezone=tz,
                 enabled=settings.drills.enabled,
                 description="Restore drills of every source (RTO)"),
        Schedule(name="reverify", kind=ScheduleKind.reverify,
                 cron=settings.verification.schedule, timezone=tz,
                 description="Rolling re-verification of kept backups"),
        Schedule(name="pitr-basebackup", kind=ScheduleKind.pitr_basebackup,
                 cron=settings.pitr.base_backup_schedule, timezone=tz,
                 description="Base backups of the PITR sources"),
    ]


async def seed_schedules(settings: Settings) -> int:
    """Create each default schedule once per catalog; returns how many this call made.

    A marker lists the defaults already seeded, so deleted ones stay deleted and a default
    added by a later version is still created once on an existing catalog.
    """
    markers = Schedule.get_pymongo_collection().database["service_markers"]
    marker = await markers.find_one({"_id": SEEDED_MARKER})
    # A marker from before the list seeded the first six defaults.
    done = set(marker.get("names", LEGACY_SEEDED)) if marker else set()
    created, names = 0, []
    for schedule in default_schedules(settings):
        if schedule.name in done:
            continue
        names.append(schedule.name)
        try:
            await schedule.insert()
            created += 1
        except DuplicateKeyError:
            pass  # another replica seeded it first
    if names or marker is None or "names" not in marker:
        listed = [*(LEGACY_SEEDED if marker and "names" not in marker else ()), *names]
        try:
            await markers.update_one(
                {"_id": SEEDED_MARKER},
                {"$addToSet": {"names": {"$each": listed}}, "$setOnInsert": {"at": utcnow()}},
                upsert=True)
        except DuplicateKeyError:  # two replicas upserted at once: add to the one that won
            await markers.update_one({"_id": SEEDED_MARKER},
                                     {"$addToSet": {"names": {"$each": listed}}})
    if created:
        log.info("default schedules created", count=created)
    return created


def _check_copy_targets(settings: Settings, kind: ScheduleKind, names: list[str]) -> None:
    """Only database schedules copy; each name a configured storage target."""
    if names and kind is not ScheduleKind.database:
        raise InvalidInputError("copyTargets only apply to database schedules",
                                [{"field": "copyTargets", "message": "only for database "
                                                                     "schedules"}])
    check_copy_targets(settings, names)


def _check_targets(settings: Settings, kind: ScheduleKind, sources: list[str],
                   retention_days: int | None, copy_targets: list[str]) -> None:
    if kind is ScheduleKind.restore_drill:
        return check_drill_schedule(settings, sources, retention_days, copy_targets)
    if kind is ScheduleKind.pitr_basebackup:
        unknown = [name for name in sources if name not in settings.pitr.sources]
        if unknown:
            raise InvalidInputError(
                f"Not PITR sources: {', '.join(unknown)} (BACKUP_PITR__SOURCES: "
                f"{', '.join(settings.pitr.sources) or 'none'})",
                [{"field": "sources", "message": f"not a PITR source {n!r}"} for n in unknown])
        sources = []  # checked here; retentionDays and copyTargets are refused below
    if kind not in BACKUP_KINDS:
        bad = [f for f, v in (("sources", sources), ("retentionDays", retention_days)) if v]
        if bad:
            raise InvalidInputError(
                f"{', '.join(bad)} only apply to database and content schedules",
                [{"field": f, "message": "only for backup schedules"} for f in bad])
    _check_copy_targets(settings, kind, copy_targets)
    if kind not in BACKUP_KINDS:
        return
    known = ({s.name for s in settings.all_sources()} if kind is ScheduleKind.database
             else {s.name for s in settings.content.sources})
    unknown = [name for name in sources if name not in known]
    if unknown:
        raise InvalidInputError(
            f"Unknown source(s): {', '.join(unknown)} (configured: {', '.join(sorted(known))})",
            [{"field": "sources", "message": f"unknown source {name!r}"} for name in unknown])


async def load_schedules(allow_sub_minute: bool = True) -> list[StoredSchedule]:
    """Every stored schedule by name, read raw so one bad document blocks no other."""
    cursor = Schedule.get_pymongo_collection().find({}).sort("name", ASCENDING)
    return [check_stored(raw, allow_sub_minute) async for raw in cursor]


async def list_schedules() -> list[Schedule]:
    """The stored schedules that are valid documents (see load_schedules for the rest)."""
    return [e.schedule for e in await load_schedules() if e.schedule is not None]


async def find_schedule(schedule_id: PydanticObjectId) -> Schedule | None:
    """The schedule, or None when it is gone or its document is invalid."""
    raw = await Schedule.get_pymongo_collection().find_one({"_id": schedule_id})
    return None if raw is None else check_stored(raw, True).schedule


async def _stored(schedule_id: PydanticObjectId,
                  settings: Settings | None = None) -> StoredSchedule:
    raw = await Schedule.get_pymongo_collection().find_one({"_id": schedule_id})
    if raw is None:
        raise NotFoundError(f"Schedule {schedule_id} not found")
    return check_stored(raw, settings.schedules.allow_sub_minute if settings else True)


async def schedule_views(settings: Settings) -> list[ScheduleOut]:
    """Every schedule by name; one that cannot run is listed with its error."""
    entries = await load_schedules(settings.schedules.allow_sub_minute)
    return [out for out in map(schedule_out, entries) if out is not None]


async def schedule_view(settings: Settings, schedule_id: PydanticObjectId) -> ScheduleOut:
    out = schedule_out(await _stored(schedule_id, settings))
    assert out is not None  # found by an ObjectId
    return out


def _check_timing(settings: Settings, cron: str, timezone: str) -> None:
    """The trigger builds, fires within the horizon, and not sub-minute unless allowed."""
    try:
        checked_trigger(cron, timezone, allow_sub_minute=settings.schedules.allow_sub_minute)
    except ValueError as exc:
        raise InvalidInputError(f"cron: {exc}", [{"field": "cron", "message": str(exc)}]) \
            from exc


async def create_schedule(settings: Settings, body: ScheduleCreate) -> Schedule:
    _check_targets(settings, body.kind, body.sources, body.retention_days, body.copy_targets)
    _check_timing(settings, body.cron, body.timezone)
    schedule = Schedule(**body.model_dump())
    try:
        await schedule.insert()
    except DuplicateKeyError as exc:
        raise ConflictError(f"A schedule named {body.name!r} already exists") from exc
    log.info("schedule created", schedule=schedule.name, cron=schedule.cron)
    return schedule


async def update_schedule(settings: Settings, schedule_id: PydanticObjectId,
                          body: ScheduleUpdate) -> Schedule:
    """Apply the named fields; an invalid stored schedule can be repaired this way."""
    entry = await _stored(schedule_id)
    changes = body.model_dump(exclude_unset=True)
    merged = {**entry.raw, **{document_alias(k): v for k, v in changes.items()},
              "updatedAt": utcnow()}
    try:
        schedule: Schedule = Schedule.model_validate(merged)
    except ValidationError as exc:
        raise InvalidInputError(
            f"The stored schedule is invalid ({describe_error(exc)}): fix those fields in this "
            "request or delete the schedule", validation_details(list(exc.errors()))) from exc
    _check_targets(settings, schedule.kind, schedule.sources, schedule.retention_days,
                   schedule.copy_targets)
    if changes.keys() & {"cron", "timezone"}:
        _check_timing(settings, schedule.cron, schedule.timezone)
    await schedule.save()
    log.info("schedule updated", schedule=schedule.name, fields=sorted(changes))
    return schedule


async def delete_schedule(schedule_id: PydanticObjectId) -> ScheduleOut:
    entry = await _stored(schedule_id)
    await Schedule.get_pymongo_collection().delete_one({"_id": schedule_id})
    log.info("schedule deleted", schedule=entry.name)
    out = schedule_out(entry)
    assert out is not None  # found by an ObjectId
    return out
