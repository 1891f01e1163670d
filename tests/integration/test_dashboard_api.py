"""The console's APIs: /status and /dashboard figures against records made here, the stats
additions, and downloading a backup's manifest and artifact (the stored bytes, encrypted)."""

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta

import httpx
import pyrage
import pytest
import zstandard
from beanie import PydanticObjectId
from fastapi import FastAPI

from app.config import Settings
from app.errors import NotFoundError
from app.models.backup import Backup, BackupCopy
from app.models.common import utcnow
from app.models.job import JobKind, JobProgress, JobStatus, JobTrigger
from app.models.requests import DatabaseBackupCreate
from app.models.schedule import ScheduleKind
from app.models.user import Role
from app.services.artifacts.stages import collect
from app.services.catalog import downloads
from app.services.catalog.retention import GOOD_FILTER
from app.services.catalog.stats import HEALTH_PROJECTION, counts_as_good
from app.services.databases.backup import back_up
from app.services.jobs.runner import Progress
from app.services.storage import LocalStorage, StorageTargets
from tests.support.accounts import Account
from tests.support.dashboard import add_backup, add_job, add_schedule, clear_schedules
from tests.support.restore_safety import backup_of
from tests.support.settings import AGE_IDENTITY
from tests.support.storage_targets import local_target, pg_source, s3_target, with_targets

pytestmark = pytest.mark.usefixtures("empty_catalog", "no_schedules")
H = timedelta(hours=1)
D = timedelta(days=1)


@pytest.fixture
async def no_schedules(app: FastAPI) -> AsyncIterator[None]:
    await clear_schedules()
    yield
    await clear_schedules()


def next_daily(hour: int, after: datetime) -> datetime:
    """The next hh:00 UTC after `after` (what `0 hh * * *` fires at)."""
    at = datetime.combine(after.date(), time(hour), tzinfo=UTC)
    return at if at > after else at + D


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_status_shows_scheduler_jobs_and_kind_totals(
        client: httpx.AsyncClient, viewer: Account, settings: Settings) -> None:
    await add_backup("pg", "completed", 2 * H, stored=100, plaintext_bytes=3000)
    last_db = await add_backup("pg", "failed", H)
    await add_backup("mongo", "completed", 3 * H, kind="mongodb", stored=10)
    await add_backup("pg", "deleted", 30 * 60 * timedelta(seconds=1), stored=5)  # trash
    last_content = await add_backup("ipfs-files", "completed", 30 * timedelta(minutes=1),
                                    kind="content", stored=7)
    # Two running jobs (another replica's live leases) fill the concurrency, so the queued
    # one stays queued while we look.
    dump = await add_job(JobKind.database, JobStatus.running, source="pg",
                         started_ago=timedelta(seconds=10),
                         progress=JobProgress(phase="dump", bytes_read=1000, bytes_written=300))
    fetch = await add_job(JobKind.content, JobStatus.running, source="ipfs-files",
                          started_ago=timedelta(seconds=8),
                          progress=JobProgress(phase="fetch", items_done=2, items_total=4))
    queued = await add_job(JobKind.verify, JobStatus.queued, backup_id=last_content.id)
    await add_schedule("daily-pg", ScheduleKind.database, "0 3 * * *", ["pg"])
    await add_schedule("cleanup", ScheduleKind.cleanup, "0 4 * * *", [])
    await add_schedule("off", ScheduleKind.database, "0 1 * * *", [], enabled=False)
    before = utcnow()

    response = await client.get("/api/backups/status", headers=viewer.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    # The test settings turn schedules off: this replica's scheduler is not started.
    assert body["scheduler"] == {"running": False, "schedules": 2,
                                 "nextRun": body["scheduler"]["nextRun"]}
    assert when(body["scheduler"]["nextRun"]) == min(next_daily(3, before),
                                                     next_daily(4, before))
    assert body["maxConcurrent"] == settings.limits.max_concurrent_jobs == 2

    jobs = body["activeJobs"]
    assert [j["id"] for j in jobs] == [str(dump.id), str(fetch.id), str(queued.id)]
    # The console polls the active jobs alone (no scan of the backups).
    active = await client.get("/api/backups/jobs/active", headers=viewer.headers)
    assert [j["id"] for j in active.json()] == [j["id"] for j in jobs]
    assert active.json()[0]["progress"]["phase"] == "dump"
    assert [j["status"] for j in jobs] == ["running", "running", "queued"]
    first = jobs[0]["progress"]
    assert (first["phase"], first["bytesDone"], first["bytesTotal"]) == ("dump", 1000, 3000)
    assert first["bytesTotalEstimated"] is True  # from pg's previous good backup
    assert first["rateBytesPerSecond"] == pytest.approx(100, rel=0.15)
    assert first["etaSeconds"] == pytest.approx(20, rel=0.15)
    assert first["percent"] == pytest.approx(33.3, abs=0.1)
    second = jobs[1]["progress"]
    assert (second["itemsDone"], second["itemsTotal"], second["percent"]) == (2, 4, 50.0)
    assert second["etaSeconds"] == pytest.approx(8, rel=0.15)
    third = jobs[2]["progress"]
    assert (third["bytesTotal"], third["rateBytesPerSecond"], third["etaSeconds"]) == (
        7, None, None)  # a verify reads the stored object; not started yet

    database, content = body["database"], body["content"]
    assert (database["enabled"], database["total"], database["successful"],
            database["failed"]) == (True, 3, 2, 1)
    assert database["lastBackup"]["id"] == str(last_db.id)
    assert (content["enabled"], content["total"], content["failed"]) == (True, 1, 0)
    assert content["lastBackup"]["id"] == str(last_content.id)


async def test_status_and_dashboard_need_a_user(client: httpx.AsyncClient) -> None:
    for path in ("/api/backups/status", "/api/backups/dashboard", "/api/sources"):
        response = await client.get(path)
        assert response.status_code == 401
        assert response.json()["error"]["code"]


async def _dashboard_records(accounts: dict[Role, Account], now: datetime
                             ) -> dict[str, Backup]:
    admin, viewer = accounts[Role.admin].user, accounts[Role.viewer].user
    by_api = await add_job(JobKind.database, JobStatus.completed, source="pg",
                           requested_by=admin.id)
    by_schedule = await add_job(JobKind.database, JobStatus.completed, source="pg",
                                trigger=JobTrigger.schedule, requested_by=viewer.id)
    copy = BackupCopy(target="offsite", stored_bytes=200, copied_at=now - D)
    made = {
        "2h": await add_backup("pg", "completed", 2 * H, stored=100, job=by_api, now=now),
        "26h": await add_backup("pg", "completed", 26 * H, stored=200, job=by_schedule,
                                copies=[copy], now=now),
        "2d": await add_backup("pg", "failed", 2 * D, now=now),
        "3d": await add_backup("pg", "completed", 3 * D, stored=300, admin=viewer.id,
                               now=now),
        "5d": await add_backup("pg", "completed", 5 * D, stored=50, retention_days=7,
                               now=now),
        "10d": await add_backup("mongo", "completed", 10 * D, stored=1000, kind="mongodb",
                                now=now),
        "20d": await add_backup("pg", "completed", 20 * D, stored=400, retention_days=10,
                                now=now),
        "40d": await add_backup("pg", "completed", 40 * D, stored=500, now=now),
        "trash": await add_backup("pg", "deleted", 4 * D, stored=70, now=now,
                                  deleted_at=now - D, status_before_delete="completed"),
    }
    await add_schedule("daily-pg", ScheduleKind.database, "0 3 * * *", ["pg"])
    await add_schedule("cleanup", ScheduleKind.cleanup, "0 4 * * *", [])
    return made


async def test_dashboard_figures(client: httpx.AsyncClient, accounts: dict[Role, Account],
                                 settings: Settings) -> None:
    now = utcnow()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as MongoDB stores it
    made = await _dashboard_records(accounts, now)
    ids = {str(b.id): name for name, b in made.items()}
    response = await client.get("/api/backups/dashboard",
                                headers=accounts[Role.viewer].headers)
    assert response.status_code == 200, response.text
    body = response.json()
    served_at = when(body["timestamp"])

    recent = [(ids[r["id"]], r["startedBy"]) for r in body["recent"]]
    assert recent == [("2h", "Test admin"), ("26h", None), ("2d", None), ("3d", "Test viewer"),
                      ("5d", None), ("10d", None), ("20d", None), ("40d", None)]

    # The backup in the trash counts as the success it was.
    assert body["last30Days"] == {"days": 30, "completed": 7, "failed": 1, "total": 8,
                                  "successRate": 87.5}

    default = settings.storage.default_name
    storage = body["storage"]
    assert storage["bySource"] == [{"name": "mongo", "bytes": 1000, "backups": 1},
                                   {"name": "pg", "bytes": 1550, "backups": 6}]
    by_target = {t["name"]: (t["bytes"], t["backups"]) for t in storage["byTarget"]}
    assert by_target == {default: (2620, 8), "offsite": (200, 1)}
    assert storage["totalBytes"] == 2820

    days = [date.fromisoformat(d["date"]) for d in body["perDay"]]
    assert days == [served_at.date() - timedelta(days=n) for n in range(29, -1, -1)]
    expected: Counter[tuple[date, str]] = Counter()
    for name in ("2h", "26h", "3d", "5d", "10d", "20d", "trash"):
        expected[(made[name].created_at.date(), "completed")] += 1
    expected[(made["2d"].created_at.date(), "failed")] += 1
    got = Counter({(date.fromisoformat(d["date"]), k): d[k] for d in body["perDay"]
                   for k in ("completed", "failed") if d[k]})
    assert got == expected

    over_time = body["storageOverTime"]
    assert over_time[0]["bytes"] == 500  # what is older than the window: the 40-day backup
    assert over_time[-1]["bytes"] == 2820
    assert [d["bytes"] for d in over_time] == sorted(d["bytes"] for d in over_time)

    expiring = body["expiringNext"]
    assert {ids[e["id"]] for e in expiring[:2]} == {"20d", "40d"}  # past retention: due now
    assert all(when(e["expiresAt"]) <= served_at for e in expiring[:2])
    assert [ids[e["id"]] for e in expiring[2:]] == ["5d", "trash", "2d"]
    assert when(expiring[2]["expiresAt"]) == made["5d"].created_at + 7 * D
    assert when(expiring[2]["cleanupAt"]) == next_daily(4, made["5d"].created_at + 7 * D)
    assert when(expiring[3]["expiresAt"]) == now - D + settings.retention.trash_days * D
    assert "retention of 7 days" in expiring[2]["reason"]

    runs = {r["name"]: r for r in body["nextRuns"]}
    assert runs["daily-pg"]["sources"] == ["pg"]
    assert when(runs["daily-pg"]["at"]) == next_daily(3, served_at)
    assert runs["cleanup"]["sources"] == []

    health = {h["source"]: h["status"] for h in body["health"]}
    assert health["pg"] == "healthy"
    assert health["mongo"] == "critical"


async def test_stats_gain_compression_and_sizes(client: httpx.AsyncClient,
                                                viewer: Account) -> None:
    await add_backup("pg", "completed", H, stored=100, chain=["pgdump", "zst", "age"],
                     duration_ms=2000)
    await add_backup("pg", "completed", 2 * H, stored=300, chain=["pgdump", "gz"],
                     duration_ms=4000)
    oldest = await add_backup("mongo", "restored", 3 * D, stored=200, kind="mongodb",
                              chain=["mongoarchive", "age"])
    await add_backup("pg", "failed", 4 * H)
    body = (await client.get("/api/backups/stats", headers=viewer.headers)).json()
    assert body["compressionUsage"] == {"gzip": 1, "none": 1, "zstd": 1}
    assert (body["totalStoredBytes"], body["averageStoredBytes"]) == (600, 200.0)
    assert (body["totalBackups"], body["backupsLast24Hours"], body["backupsLast7Days"]) == (
        4, 3, 4)
    assert body["averageDurationSeconds"] == 3.0
    assert when(body["oldestBackup"]) == oldest.created_at.replace(
        microsecond=oldest.created_at.microsecond // 1000 * 1000)


@pytest.mark.usefixtures("source_databases")
async def test_artifact_and_manifest_download(client: httpx.AsyncClient, admin: Account,
                                              viewer: Account, settings: Settings) -> None:
    backup = await backup_of(client, admin, "pg", tables=["authors"])
    store = LocalStorage(settings.storage.local_dir)
    stored = (store.root / backup["storageKey"]).read_bytes()

    refused = await client.get(f"/api/backups/{backup['id']}/artifact", headers=viewer.headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"

    response = await client.get(f"/api/backups/{backup['id']}/artifact", headers=admin.headers)
    assert response.status_code == 200
    assert response.content == stored
    assert int(response.headers["content-length"]) == backup["storedBytes"] == len(stored)
    name = backup["storageKey"].rsplit("/", 1)[1]
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert response.headers["x-backvault-sha256"] == backup["sha256"]
    # Still encrypted and compressed: the age identity and zstd give back pg_dump's archive.
    dump = zstandard.ZstdDecompressor().decompressobj().decompress(
        pyrage.decrypt(response.content, [AGE_IDENTITY]))
    assert dump.startswith(b"PGDMP")

    manifest = await client.get(f"/api/backups/{backup['id']}/manifest",
                                headers=viewer.headers)
    assert manifest.status_code == 200
    assert manifest.content == (store.root / backup["manifestKey"]).read_bytes()
    assert manifest.json()["sha256"] == backup["sha256"]
    assert "age -d -i key.txt" in manifest.json()["restoreCommand"]

    (store.root / backup["storageKey"]).unlink()
    missing = await client.get(f"/api/backups/{backup['id']}/artifact", headers=admin.headers)
    assert missing.status_code == 404
    assert "missing" in missing.json()["error"]["message"]
    unknown = await client.get("/api/backups/64b7f0000000000000000000/manifest",
                               headers=viewer.headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    invalid = await client.get("/api/backups/not-an-id/artifact", headers=admin.headers)
    assert invalid.status_code == 422


@pytest.mark.usefixtures("source_databases")
async def test_a_copy_serves_the_artifact_when_the_primary_is_gone(
        settings: Settings, admin: Account) -> None:
    ours = with_targets(settings, [local_target("disk"), s3_target("minio")], default="disk",
                        sources=[pg_source("dl-copy", copy_targets=["minio"])])
    targets = StorageTargets.from_settings(ours)
    await targets.prepare()
    backup = await back_up(ours, targets, Progress(),
                           DatabaseBackupCreate(source="dl-copy", tables=["authors"]),
                           admin=admin.user.id)
    assert backup.storage_key is not None
    primary = await downloads.artifact_of(targets, backup)
    assert (primary.target, primary.info.size) == ("disk", backup.stored_bytes)

    await targets.named("disk").delete(backup.storage_key)
    found = await downloads.artifact_of(targets, backup)
    assert (found.target, found.info.size) == ("minio", backup.stored_bytes)
    assert hashlib.sha256(await collect(found.chunks())).hexdigest() == backup.sha256
    manifest = await downloads.manifest_of(targets, backup)
    assert manifest.target == "disk"  # only the artifact was lost

    await targets.named("minio").delete(backup.storage_key)
    with pytest.raises(NotFoundError, match="no copy holds it"):
        await downloads.artifact_of(targets, backup)


async def test_health_reads_good_backups_as_retention_does() -> None:
    """The one-pass health tally applies retention's GOOD_FILTER in Python: both agree."""
    made = [
        await add_backup("pg", "completed", H),
        await add_backup("pg", "restored", H),
        await add_backup("pg", "failed", H),
        await add_backup("pg", "deleted", H, stored=1),
        await add_backup("pg", "completed", H, safety_for=PydanticObjectId()),
        await add_backup("pg", "completed", H, deleting_since=utcnow()),
        await add_backup("pg", "completed", H, verification={"state": "failed"}),
        await add_backup("pg", "completed", H, verification={"state": "passed"}),
    ]
    collection = Backup.get_pymongo_collection()
    by_query = {d["_id"] async for d in collection.find(GOOD_FILTER, {"_id": 1})}
    by_python = {d["_id"] async for d in collection.find({}, HEALTH_PROJECTION)
                 if counts_as_good(d)}
    assert by_query == by_python == {made[0].id, made[1].id, made[7].id}
