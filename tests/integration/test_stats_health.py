"""Statistics (the seed's aggregations) and the health rules at their boundaries."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId

from app.config import Settings
from app.models.backup import Backup
from app.models.common import utcnow
from app.models.stats import HealthStatus
from app.services.catalog.stats import backup_health, backup_stats
from tests.support.accounts import Account

pytestmark = pytest.mark.usefixtures("empty_catalog")

NOW = datetime(2026, 2, 7, 12, 0, tzinfo=UTC)


async def add(admin: PydanticObjectId | None, created: datetime, status: str,
              type_: str = "manual", size: float | None = None,
              duration_ms: int | None = None) -> Backup:
    backup = Backup(admin=admin, type=type_, status=status, sizeMB=size, created_at=created,
                    duration_ms=duration_ms)
    await backup.insert()
    return backup


async def test_statistics(viewer: Account, admin: Account) -> None:
    a, b = viewer.user.id, admin.user.id
    await add(a, datetime(2026, 1, 10, tzinfo=UTC), "completed", "manual", 100, 10_000)
    await add(a, datetime(2026, 1, 20, tzinfo=UTC), "completed", "automatic", 50, 20_000)
    await add(b, datetime(2026, 2, 5, tzinfo=UTC), "failed", "manual")
    await add(b, datetime(2026, 2, 6, tzinfo=UTC), "restored", "automatic", 30, 30_000)
    await add(a, datetime(2026, 2, 7, 8, tzinfo=UTC), "pending", "manual")
    await add(b, datetime(2026, 2, 7, 10, tzinfo=UTC), "completed", "manual", 20, 40_000)

    s = await backup_stats(now=NOW)
    assert s.total_backups == 6
    assert s.by_status == {"pending": 1, "completed": 3, "failed": 1, "restored": 1,
                           "deleted": 0}
    assert s.by_type == {"manual": 4, "automatic": 2}
    assert (s.size.count, s.size.total_size_mb, s.size.avg_size_mb) == (4, 200, 50)
    assert (s.size.max_size_mb, s.size.min_size_mb) == (100, 20)
    assert (s.success_rate.total, s.success_rate.successful, s.success_rate.failed) == (6, 4, 1)
    assert s.success_rate.success_rate == 66.67
    assert [(m.year, m.month, m.total_backups, m.total_size) for m in s.monthly] == [
        (2026, 2, 4, 50), (2026, 1, 2, 150)]
    february = {st.status: (st.count, st.size) for st in s.monthly[0].statuses}
    assert february == {"completed": (1, 20), "failed": (1, 0), "pending": (1, 0),
                        "restored": (1, 30)}
    activity = {x.admin_id: x for x in s.admin_activity}
    assert (activity[a].total_backups, activity[a].manual_backups,
            activity[a].successful_backups) == (3, 2, 2)
    assert activity[a].admin_name == "Test viewer"
    assert activity[a].admin_email == "viewer@example.com"
    assert activity[b].last_backup == datetime(2026, 2, 7, 10, tzinfo=UTC)
    assert [r.created_at.day for r in s.recent_activity] == [7, 7, 6, 5, 20, 10]
    assert s.recent_activity[0].admin_name == "Test admin"
    assert (s.backups_last_24_hours, s.backups_last_7_days) == (2, 4)
    assert s.oldest_backup == datetime(2026, 1, 10, tzinfo=UTC)
    assert s.newest_backup == datetime(2026, 2, 7, 10, tzinfo=UTC)
    assert s.average_duration_seconds == 25.0


async def test_statistics_of_an_empty_catalog() -> None:
    s = await backup_stats(now=NOW)
    assert s.total_backups == 0
    assert s.success_rate.success_rate is None
    assert s.size.avg_size_mb is None
    assert s.monthly == []
    assert s.admin_activity == []


async def test_recent_activity_keeps_the_ten_newest(viewer: Account) -> None:
    for i in range(15):
        await add(viewer.user.id, NOW - timedelta(hours=i), "completed", size=1)
    s = await backup_stats(now=NOW)
    assert [r.created_at for r in s.recent_activity] == [NOW - timedelta(hours=i)
                                                         for i in range(10)]


async def test_stats_endpoint(client: httpx.AsyncClient, viewer: Account) -> None:
    await add(viewer.user.id, utcnow() - timedelta(hours=1), "completed", size=12.5)
    body = (await client.get("/api/backups/stats", headers=viewer.headers)).json()
    assert body["totalBackups"] == 1
    assert body["size"]["totalSizeMB"] == 12.5
    assert body["backupsLast24Hours"] == 1
    assert body["successRate"]["successRate"] == 100.0
    assert body["adminActivity"][0]["adminName"] == "Test viewer"


async def health_at(*records: tuple[timedelta, str], size: float = 10) -> Any:
    for age, status in records:
        await add(PydanticObjectId(), NOW - age, status, size=size)
    return await backup_health(now=NOW)


async def test_empty_catalog_is_critical() -> None:
    h = await backup_health(now=NOW)
    assert h.status is HealthStatus.critical
    assert h.issues == ["No successful backup in last 24 hours"]
    assert h.has_recent_backup is False
    assert h.last_successful_backup is None


async def test_good_backup_exactly_24_hours_old_is_healthy() -> None:
    h = await health_at((timedelta(hours=24), "completed"))
    assert h.status is HealthStatus.healthy
    assert h.issues == []
    assert h.last_successful_backup == NOW - timedelta(hours=24)


async def test_good_backup_just_over_24_hours_old_is_critical() -> None:
    h = await health_at((timedelta(hours=24, milliseconds=1), "completed"))
    assert h.status is HealthStatus.critical
    assert h.last_successful_backup == NOW - timedelta(hours=24, milliseconds=1)


@pytest.mark.parametrize(("status", "expected"), [
    ("restored", HealthStatus.healthy),
    ("pending", HealthStatus.critical),
    ("failed", HealthStatus.critical),
])
async def test_which_statuses_count_as_a_good_backup(status: str,
                                                     expected: HealthStatus) -> None:
    assert (await health_at((timedelta(hours=1), status))).status is expected


async def test_three_failures_in_a_week_are_still_healthy() -> None:
    h = await health_at((timedelta(hours=1), "completed"),
                        *[(timedelta(days=d), "failed") for d in (1, 3, 7)])
    assert h.recent_failures == 3
    assert h.status is HealthStatus.healthy


async def test_four_failures_in_a_week_are_a_warning() -> None:
    h = await health_at((timedelta(hours=1), "completed"),
                        *[(timedelta(days=d), "failed") for d in (1, 2, 3, 7)])
    assert h.recent_failures == 4
    assert h.status is HealthStatus.warning
    assert h.issues == ["Multiple backup failures in last week (4)"]


async def test_failures_older_than_a_week_do_not_count() -> None:
    h = await health_at((timedelta(hours=1), "completed"),
                        *[(timedelta(days=d), "failed") for d in (1, 2, 3)],
                        (timedelta(days=7, seconds=1), "failed"))
    assert h.recent_failures == 3
    assert h.status is HealthStatus.healthy


async def test_no_recent_backup_and_failures_is_critical_with_both_issues() -> None:
    h = await health_at(*[(timedelta(days=d), "failed") for d in (1, 2, 3, 4)])
    assert h.status is HealthStatus.critical
    assert h.issues == ["No successful backup in last 24 hours",
                        "Multiple backup failures in last week (4)"]


async def test_storage_used_counts_good_backups_only() -> None:
    h = await health_at((timedelta(hours=1), "completed"), (timedelta(hours=2), "restored"),
                        (timedelta(hours=3), "failed"), size=2.5)
    assert h.total_storage_used_mb == 5.0
    assert h.total_backups == 3


async def test_health_endpoint(client: httpx.AsyncClient, viewer: Account,
                               settings: Settings) -> None:
    critical = (await client.get("/api/backups/health", headers=viewer.headers)).json()
    assert critical["status"] == "critical"
    # Health is judged per configured source: each needs its own recent good backup.
    names = [s.name for s in settings.all_sources()] + [s.name for s in settings.content.sources]
    for name in names[:-1]:
        backup = await add(viewer.user.id, utcnow() - timedelta(minutes=5), "completed", size=3)
        await Backup.get_pymongo_collection().update_one({"_id": backup.id},
                                                         {"$set": {"source": name}})
    partly = (await client.get("/api/backups/health", headers=viewer.headers)).json()
    assert partly["status"] == "critical"
    assert partly["issues"] == [f"{names[-1]}: No successful backup in last 24 hours"]
    last = await add(viewer.user.id, utcnow() - timedelta(minutes=5), "completed", size=3)
    await Backup.get_pymongo_collection().update_one({"_id": last.id},
                                                     {"$set": {"source": names[-1]}})
    healthy = (await client.get("/api/backups/health", headers=viewer.headers)).json()
    assert healthy["status"] == "healthy"
    assert healthy["hasRecentBackup"] is True
    assert healthy["totalStorageUsedMB"] == 3 * len(names)
    assert [s["source"] for s in healthy["sources"]] == names
