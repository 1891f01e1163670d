"""Catalog statistics and the backup health rules (seed 000's queries).

The figures come from one streamed pass over a projection of the catalog, so they
work on any MongoDB wire server (FerretDB has no $facet or $lookup) and memory
grows with the number of months and admins, not of backups.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from beanie import PydanticObjectId

from app.config import Settings
from app.models.backup import GOOD_STATUSES, Backup, BackupStatus, BackupType, VerificationState
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
from app.services.artifacts.compress import ALGORITHM_OF_SUFFIX
from app.services.pitr.health import pitr_issues
from app.services.recoverability.health import drill_issues

PROJECTION = {"status": 1, "type": 1, "sizeMB": 1, "createdAt": 1, "admin": 1, "durationMs": 1,
              "formatChain": 1, "storedBytes": 1}
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
    compression: Counter[str] = field(default_factory=Counter)
    stored_bytes: int = 0
    stored_count: int = 0

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
        if good:
            self._add_stored(doc)
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

    def _add_stored(self, doc: dict[str, Any]) -> None:
        chain = doc.get("formatChain") or []
        if chain:  # a record without a format chain says nothing of its compression
            self.compression[next((ALGORITHM_OF_SUFFIX[s].value for s in chain
                                   if s in ALGORITHM_OF_SUFFIX), "none")] += 1
        if isinstance(doc.get("storedBytes"), int):
            self.stored_bytes += doc["storedBytes"]
            self.stored_count += 1

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
            compression_usage=dict(sorted(self.compression.items())),
            total_stored_bytes=self.stored_bytes,
            average_stored_bytes=round(self.stored_bytes / self.stored_count, 1)
            if self.stored_count else None,
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


HEALTH_PROJECTION = {"source": 1, "status": 1, "createdAt": 1, "sizeMB": 1, "deletingSince": 1,
                     "verification.state": 1, "safetyFor": 1}
GOOD_VALUES = frozenset(s.value for s in GOOD_STATUSES)


def counts_as_good(doc: dict[str, Any]) -> bool:
    """GOOD_FILTER (retention's rule) applied to a raw catalog document."""
    return (doc.get("status") in GOOD_VALUES and doc.get("deletingSince") is None
            and doc.get("safetyFor") is None
            and (doc.get("verification") or {}).get("state") != VerificationState.failed.value)


@dataclass
class _HealthTally:
    last_good: datetime | None = None
    good: int = 0
    failures: int = 0


@dataclass
class _CatalogTally:
    sources: dict[str | None, _HealthTally] = field(
        default_factory=lambda: defaultdict(_HealthTally))
    used_mb: float = 0.0
    total: int = 0


async def _health_tallies(now: datetime) -> _CatalogTally:
    """Per source: the newest good backup, good backups, failures in 7 days; and the
    catalog's size and count. One streamed pass: a wire server that filters by scanning
    would otherwise scan once per source and figure."""
    found = _CatalogTally()
    week_ago = now - timedelta(days=7)
    async for doc in Backup.get_pymongo_collection().find({}, HEALTH_PROJECTION):
        status, created = doc.get("status"), doc.get("createdAt")
        created = _aware(created) if created is not None else None
        tally = found.sources[doc.get("source")]
        found.total += status != BackupStatus.deleted.value
        if status in GOOD_VALUES:
            found.used_mb += doc.get("sizeMB") or 0.0
        if counts_as_good(doc):
            tally.good += 1
            if created is not None and (tally.last_good is None or created > tally.last_good):
                tally.last_good = created
        if status == BackupStatus.failed.value and created is not None and created >= week_ago:
            tally.failures += 1
    return found


def _overall_tally(tallies: dict[str | None, _HealthTally]) -> _HealthTally:
    lasts = [t.last_good for t in tallies.values() if t.last_good is not None]
    return _HealthTally(last_good=max(lasts, default=None),
                        good=sum(t.good for t in tallies.values()),
                        failures=sum(t.failures for t in tallies.values()))


def _source_health(name: str | None, kind: str, now: datetime,
                   tally: _HealthTally) -> SourceHealth:
    """The health rules over one source's backups (all backups when `name` is None)."""
    last_good, failures = tally.last_good, tally.failures
    has_recent = last_good is not None and last_good >= now - timedelta(hours=24)
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
                        good_backups=tally.good if name else 0)


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
    catalog = await _health_tallies(now)
    tallies = catalog.sources
    overall = _source_health(None, "all", now, _overall_tally(tallies))
    sources = [_source_health(name, kind, now, tallies.get(name) or _HealthTally())
               for name, kind in (configured_sources(settings) if settings else [])]
    # A source whose last drill failed or missed its RTO target is at least a warning.
    drill_problems = await drill_issues([s.source for s in sources] if settings else None)
    wal_problems = await pitr_issues(settings) if settings else {}
    for entry in sources:
        for problems in (drill_problems, wal_problems):
            if entry.source in problems:
                entry.issues.append(problems.pop(entry.source))
                entry.status = max(entry.status, HealthStatus.warning, key=HEALTH_ORDER.index)
    if sources:
        status = max((s.status for s in sources), key=HEALTH_ORDER.index)
        issues = [f"{s.source}: {issue}" for s in sources for issue in s.issues]
        has_recent = all(s.has_recent_backup for s in sources)
    else:
        status, issues, has_recent = overall.status, overall.issues, overall.has_recent_backup
    if drill_problems:  # drills of sources no longer configured, when judged as one
        issues = [*issues, *(f"{name}: {why}" for name, why in drill_problems.items())]
        status = max(status, HealthStatus.warning, key=HEALTH_ORDER.index)
    used = catalog.used_mb
    return HealthReport(
        status=status, issues=issues, has_recent_backup=has_recent,
        last_successful_backup=overall.last_successful_backup,
        recent_failures=overall.recent_failures,
        total_backups=catalog.total,
        total_storage_used_mb=round(used, 3), timestamp=now, sources=sources,
    )
