"""Catalog statistics and the backup health rules (seed 000's queries).

The figures come from one streamed pass over a projection of the catalog, so they
work on any MongoDB wire server (FerretDB has no $facet or $lookup) and memory
grows with the number of months and admins, not of backups.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from beanie import PydanticObjectId, SortDirection

from app.config import Settings
from app.models.backup import GOOD_STATUSES, Backup, BackupStatus, BackupType
from app.models.common import utcnow
from app.models.stats import (
    AdminActivity,
    BackupStats,
    HealthReport,
    HealthStatus,
    MonthlyReport,
    MonthlyStatus,
    RecentActivity,
    SizeStats,
    SourceHealth,
    SuccessRate,
)
from app.models.user import User
from app.services.catalog.retention import GOOD_FILTER

PROJECTION = {"status": 1, "type": 1, "sizeMB": 1, "createdAt": 1, "admin": 1, "durationMs": 1}
RECENT_ACTIVITY = 10
FAILURE_WARNING_THRESHOLD = 3


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class _AdminTally:
    total: int = 0
    manual: int = 0
    successful: int = 0
    last: datetime | None = None


@dataclass
class StatsAccumulator:
    """Folds backup records, one at a time, into the statistics."""

    now: datetime
    by_status: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    size_total: float = 0.0
    size_count: int = 0
    size_max: float | None = None
    size_min: float | None = None
    monthly: dict[tuple[int, int], dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(dict))
    admins: dict[PydanticObjectId | None, _AdminTally] = field(
        default_factory=lambda: defaultdict(_AdminTally))
    recent: list[dict[str, Any]] = field(default_factory=list)
    oldest: datetime | None = None
    newest: datetime | None = None
    last_24h: int = 0
    last_7d: int = 0
    duration_total_ms: int = 0
    duration_count: int = 0

    def add(self, doc: dict[str, Any]) -> None:
        status, kind = doc.get("status"), doc.get("type")
        created = _aware(doc["createdAt"]) if doc.get("createdAt") else None
        size = doc.get("sizeMB")
        self.by_status[str(status)] += 1
        if status == BackupStatus.deleted:
            return  # the trash shows in byStatus only
        self.by_type[str(kind)] += 1
        good = status in GOOD_STATUSES
        if good and isinstance(size, int | float):
            self.size_total += size
            self.size_count += 1
            self.size_max = size if self.size_max is None else max(self.size_max, size)
            self.size_min = size if self.size_min is None else min(self.size_min, size)
        if good and isinstance(doc.get("durationMs"), int):
            self.duration_total_ms += doc["durationMs"]
            self.duration_count += 1
        if created is not None:
            month = self.monthly[(created.year, created.month)]
            count_size = month.setdefault(str(status), [0, 0.0])
            count_size[0] += 1
            count_size[1] += size if isinstance(size, int | float) else 0.0
            self.oldest = created if self.oldest is None else min(self.oldest, created)
            self.newest = created if self.newest is None else max(self.newest, created)
            self.last_24h += created >= self.now - timedelta(hours=24)
            self.last_7d += created >= self.now - timedelta(days=7)
        admin = self.admins[doc.get("admin")]
        admin.total += 1
        admin.manual += kind == BackupType.manual
        admin.successful += good
        if created is not None and (admin.last is None or created > admin.last):
            admin.last = created
        self._keep_recent(doc, created)

    def _keep_recent(self, doc: dict[str, Any], created: datetime | None) -> None:
        if created is None:
            return
        self.recent.append({**doc, "createdAt": created})
        self.recent.sort(key=lambda d: (d["createdAt"], str(d["_id"])), reverse=True)
        del self.recent[RECENT_ACTIVITY:]

    def result(self, users: dict[PydanticObjectId, User]) -> BackupStats:
        total = sum(self.by_status.values()) - self.by_status[BackupStatus.deleted]
        successful = sum(self.by_status[s] for s in GOOD_STATUSES)
        failed = self.by_status[BackupStatus.failed]

        def name_of(admin_id: Any) -> str | None:
            user = users.get(admin_id)
            return (user.name or user.username) if user else None

        monthly = [
            MonthlyReport(
                year=year, month=month,
                statuses=[MonthlyStatus(status=s, count=int(c), size=round(sz, 3))
                          for s, (c, sz) in sorted(statuses.items())],
                total_backups=int(sum(c for c, _ in statuses.values())),
                total_size=round(sum(sz for _, sz in statuses.values()), 3),
            )
            for (year, month), statuses in sorted(self.monthly.items(), reverse=True)
        ]
        activity = sorted(
            (AdminActivity(admin_id=admin_id, admin_name=name_of(admin_id),
                           admin_email=users[admin_id].email if admin_id in users else None,
                           total_backups=t.total, manual_backups=t.manual,
                           successful_backups=t.successful, last_backup=t.last)
             for admin_id, t in self.admins.items()),
            key=lambda a: (-a.total_backups, str(a.admin_id)),
        )
        return BackupStats(
            total_backups=total,
            by_status={s.value: self.by_status[s.value] for s in BackupStatus},
            by_type={t.value: self.by_type[t.value] for t in BackupType},
            size=SizeStats(
                count=self.size_count, total_size_mb=round(self.size_total, 3),
                avg_size_mb=round(self.size_total / self.size_count, 3) if self.size_count
                else None,
                max_size_mb=self.size_max, min_size_mb=self.size_min),
            success_rate=SuccessRate(
                total=total, successful=successful, failed=failed,
                success_rate=round(successful / total * 100, 2) if total else None),
            monthly=monthly,
            admin_activity=activity,
            recent_activity=[
                RecentActivity(id=d["_id"], type=d.get("type"), status=d.get("status"),
                               created_at=d["createdAt"], admin_name=name_of(d.get("admin")))
                for d in self.recent
            ],
            oldest_backup=self.oldest,
            newest_backup=self.newest,
            backups_last_24_hours=self.last_24h,
            backups_last_7_days=self.last_7d,
            average_duration_seconds=round(self.duration_total_ms / self.duration_count / 1000, 3)
            if self.duration_count else None,
        )


async def backup_stats(now: datetime | None = None) -> BackupStats:
    """Counts by status and type, sizes, success rate, months, admins, recent activity."""
    acc = StatsAccumulator(now=now or utcnow())
    async for doc in Backup.get_pymongo_collection().find({}, PROJECTION):
        acc.add(doc)
    admin_ids = [a for a in acc.admins if a is not None]
    users = {u.id: u for u in await User.find({"_id": {"$in": admin_ids}}).to_list()
             if u.id is not None}
    return acc.result(users)


HEALTH_ORDER = [HealthStatus.healthy, HealthStatus.warning, HealthStatus.critical]


async def _source_health(name: str | None, kind: str, now: datetime) -> SourceHealth:
    """The health rules over one source's backups (all backups when `name` is None)."""
    scope: dict[str, Any] = {} if name is None else {"source": name}
    good = {**scope, **GOOD_FILTER}
    latest = await (Backup.find(good).sort([("createdAt", SortDirection.DESCENDING)])
                    .limit(1).to_list())
    last_good = _aware(latest[0].created_at) if latest else None
    has_recent = last_good is not None and last_good >= now - timedelta(hours=24)
    failures = await Backup.find({**scope, "status": BackupStatus.failed.value,
                                  "createdAt": {"$gte": now - timedelta(days=7)}}).count()
    issues, status = [], HealthStatus.healthy
    if not has_recent:
        status = HealthStatus.critical
        issues.append("No successful backup in last 24 hours")
    if failures > FAILURE_WARNING_THRESHOLD:
        status = HealthStatus.critical if status is HealthStatus.critical else HealthStatus.warning
        issues.append(f"Multiple backup failures in last week ({failures})")
    return SourceHealth(source=name or "", kind=kind, status=status, issues=issues,
                        has_recent_backup=has_recent, last_successful_backup=last_good,
                        recent_failures=failures,
                        # The overall line (no name) is not shown: no count for it.
                        good_backups=await Backup.find(good).count() if name else 0)


def configured_sources(settings: Settings) -> list[tuple[str, str]]:
    """The enabled database and content sources, with their kind."""
    return ([(name, "database") for name in settings.enabled_database_sources()]
            + [(name, "content") for name in settings.content_source_names()])


async def backup_health(settings: Settings | None = None,
                        now: datetime | None = None) -> HealthReport:
    """Each configured source: critical without a good backup in 24 h, warning on more than
    3 failures in 7 days; overall, the worst of them. Without settings (or sources), the
    catalog is judged as one."""
    now = now or utcnow()
    overall = await _source_health(None, "all", now)
    sources = [await _source_health(name, kind, now)
               for name, kind in (configured_sources(settings) if settings else [])]
    if sources:
        status = max((s.status for s in sources), key=HEALTH_ORDER.index)
        issues = [f"{s.source}: {issue}" for s in sources for issue in s.issues]
        has_recent = all(s.has_recent_backup for s in sources)
    else:
        status, issues, has_recent = overall.status, overall.issues, overall.has_recent_backup
    used = 0.0
    async for doc in Backup.get_pymongo_collection().find(
            {"status": {"$in": [s.value for s in GOOD_STATUSES]}}, {"sizeMB": 1}):
        used += doc.get("sizeMB") or 0.0
    return HealthReport(
        status=status, issues=issues, has_recent_backup=has_recent,
        last_successful_backup=overall.last_successful_backup,
        recent_failures=overall.recent_failures,
        total_backups=await Backup.find(
            {"status": {"$ne": BackupStatus.deleted.value}}).count(),
        total_storage_used_mb=round(used, 3), timestamp=now, sources=sources,
    )
