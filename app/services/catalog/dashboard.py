"""The console's dashboard: the last 30 days (UTC) of backups, storage, expiry and health.

Like the statistics, it folds a streamed projection of the catalog (one pass here, one for
health, one for retention's view), so it works on any MongoDB wire server, where every
filter but `_id` scans; memory grows with days and sources, not with backups.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from beanie import PydanticObjectId, SortDirection

from app.config import Settings
from app.models.backup import Backup, BackupOut, BackupStatus, BackupType
from app.models.common import utcnow
from app.models.dashboard import (
    Dashboard,
    DayCount,
    DayStorage,
    PeriodTotals,
    RecentBackup,
    StorageUsage,
    StorageUse,
)
from app.models.job import BackupJob, JobTrigger
from app.models.user import User
from app.services.catalog.expiring import expiring_next
from app.services.catalog.stats import GOOD_VALUES, backup_health
from app.services.catalog.upcoming import cleanup_triggers, next_runs

DAYS = 30
RECENT = 10
PROJECTION = {"status": 1, "source": 1, "createdAt": 1, "storedBytes": 1, "storageTarget": 1,
              "storageBackend": 1, "copies": 1, "statusBeforeDelete": 1}
# Statuses whose object is on storage: the trash keeps it until retention empties it.
STORED = {*GOOD_VALUES, BackupStatus.deleted.value}


@dataclass
class DashboardAccumulator:
    """Folds backup records (the PROJECTION) into the dashboard's counts and sums."""

    now: datetime
    default_target: str
    days: list[date] = field(default_factory=list)
    per_day: dict[date, Counter[str]] = field(default_factory=dict)
    # Bytes that arrived on each day (the first day holds everything older).
    arrived: Counter[date] = field(default_factory=Counter)
    by_source: dict[str, list[int]] = field(default_factory=dict)
    by_target: dict[str, list[int]] = field(default_factory=dict)
    # (createdAt, _id) of the newest records outside the trash, newest first.
    newest: list[tuple[datetime, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        today = self.now.date()
        self.days = [today - timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
        self.per_day = {d: Counter() for d in self.days}

    def _day(self, when: datetime | None) -> date:
        first = self.days[0]
        return max(first, when.date()) if when is not None else first

    def add(self, doc: dict[str, Any]) -> None:
        status, created = doc.get("status"), doc.get("createdAt")
        if created is not None and status != BackupStatus.deleted.value:
            self.newest.append((created, doc["_id"]))
            self.newest.sort(key=lambda e: (e[0], str(e[1])), reverse=True)
            del self.newest[RECENT:]
        if created is not None and created.date() in self.per_day:
            # A backup in the trash counts as what it was (a week-old daily is still a
            # success of its day).
            was = doc.get("statusBeforeDelete") if status == BackupStatus.deleted.value \
                else status
            good = was in GOOD_VALUES
            self.per_day[created.date()]["completed" if good else str(was)] += 1
        size = doc.get("storedBytes")
        if status not in STORED or not isinstance(size, int):
            return
        target = doc.get("storageTarget") or doc.get("storageBackend") or self.default_target
        self._use(self.by_target, target, size)
        self.arrived[self._day(created)] += size
        if status != BackupStatus.deleted.value:
            self._use(self.by_source, doc.get("source") or "(none)", size)
        for copy in doc.get("copies") or []:
            if isinstance(copy.get("storedBytes"), int):
                self._use(self.by_target, copy["target"], copy["storedBytes"])
                self.arrived[self._day(copy.get("copiedAt") or created)] += copy["storedBytes"]

    @staticmethod
    def _use(table: dict[str, list[int]], name: str, size: int) -> None:
        entry = table.setdefault(name, [0, 0])
        entry[0] += size
        entry[1] += 1

    def totals(self) -> PeriodTotals:
        completed = sum(c["completed"] for c in self.per_day.values())
        failed = sum(c["failed"] for c in self.per_day.values())
        total = sum(sum(v for k, v in c.items() if k != BackupStatus.deleted.value)
                    for c in self.per_day.values())
        finished = completed + failed
        return PeriodTotals(days=DAYS, completed=completed, failed=failed, total=total,
                            success_rate=round(completed / finished * 100, 2) if finished
                            else None)

    def storage(self) -> StorageUsage:
        def uses(table: dict[str, list[int]]) -> list[StorageUse]:
            return [StorageUse(name=name, bytes=b, backups=n)
                    for name, (b, n) in sorted(table.items())]

        return StorageUsage(total_bytes=sum(b for b, _ in self.by_target.values()),
                            by_source=uses(self.by_source), by_target=uses(self.by_target))

    def day_counts(self) -> list[DayCount]:
        return [DayCount(date=d, completed=self.per_day[d]["completed"],
                         failed=self.per_day[d]["failed"]) for d in self.days]

    def storage_over_time(self) -> list[DayStorage]:
        running, out = 0, []
        for day in self.days:
            running += self.arrived[day]
            out.append(DayStorage(date=day, bytes=running))
        return out


async def user_names(ids: list[PydanticObjectId]) -> dict[PydanticObjectId, str]:
    users = await User.find({"_id": {"$in": ids}}).to_list() if ids else []
    return {u.id: u.name or u.username for u in users if u.id is not None}


async def recent_backups(ids: list[PydanticObjectId]) -> list[RecentBackup]:
    """These backups (the newest outside the trash), with who started them (null: a
    schedule). Read one by one by _id, the one query every wire server answers by index."""
    backups = [b for b in [await Backup.get(i) for i in ids] if b is not None]
    jobs = {j.id: j for j in [await BackupJob.get(b.job_id) for b in backups
                              if b.job_id is not None] if j is not None}
    starters: dict[PydanticObjectId, PydanticObjectId | None] = {}
    for backup in backups:
        assert backup.id is not None
        job = jobs.get(backup.job_id)
        if job is not None:
            starters[backup.id] = (None if job.trigger is JobTrigger.schedule
                                   else job.requested_by)
        else:  # a record without its job (imported, or the job was pruned)
            starters[backup.id] = backup.admin if backup.type is BackupType.manual else None
    names = await user_names([u for u in starters.values() if u is not None])
    out = []
    for backup in backups:
        assert backup.id is not None
        starter = starters[backup.id]
        out.append(RecentBackup(
            id=backup.id, source=backup.source,
            kind=backup.kind.value if backup.kind else None, type=backup.type,
            status=backup.status, created_at=backup.created_at,
            stored_bytes=backup.stored_bytes, duration_ms=backup.duration_ms,
            started_by=names.get(starter) if starter is not None else None))
    return out


async def dashboard(settings: Settings, now: datetime | None = None) -> Dashboard:
    """Recent backups, 30-day totals, storage, what expires next, per-day counts, storage
    over time, next runs and health per source."""
    now = now or utcnow()
    acc = DashboardAccumulator(now=now, default_target=settings.storage.default_name)
    async for doc in Backup.get_pymongo_collection().find({}, PROJECTION):
        acc.add(doc)
    health = await backup_health(settings, now)
    return Dashboard(
        recent=await recent_backups([i for _, i in acc.newest]),
        last_30_days=acc.totals(), storage=acc.storage(),
        expiring_next=await expiring_next(settings, now, await cleanup_triggers(settings, now)),
        per_day=acc.day_counts(), storage_over_time=acc.storage_over_time(),
        next_runs=await next_runs(settings, now), health=health.sources, timestamp=now)


async def last_backup(query: dict[str, Any]) -> BackupOut | None:
    found = await (Backup.find(query).sort([("createdAt", SortDirection.DESCENDING)])
                   .limit(1).to_list())
    return BackupOut.model_validate(found[0]) if found else None
