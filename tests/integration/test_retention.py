"""Retention against real backups on disk: the minimum survives, files go before records."""

from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings
from app.models.backup import Backup, BackupStatus
from app.models.common import utcnow
from app.models.requests import CleanupRequest, DatabaseBackupCreate
from app.services.catalog.retention import apply_retention
from app.services.databases.backup import back_up
from app.services.jobs.runner import Progress
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.settings import PG_DB, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases")


def settings_with(settings: Settings, source: str, **retention: Any) -> Settings:
    extra = SourceSettings(name=source, kind=SourceKind("postgres"), uri=SecretStr(pg_uri(PG_DB)))
    return settings.model_copy(update={
        "sources": [*settings.sources, extra],
        "retention": settings.retention.model_copy(update=retention)})


async def aged_backups(settings: Settings, source: str, admin: Account,
                       ages_days: list[int]) -> list[Backup]:
    """Real backups of `source`, then dated back by the given numbers of days."""
    made = []
    for age in ages_days:
        backup = await back_up(settings, LocalStorage(settings.storage.local_dir), Progress(),
                               DatabaseBackupCreate(source=source, retention_days=7),
                               admin=admin.user.id)
        await Backup.get_pymongo_collection().update_one(
            {"_id": backup.id}, {"$set": {"createdAt": utcnow() - timedelta(days=age)}})
        made.append(backup)
    return made


def files_of(settings: Settings, backup: Backup) -> list[bool]:
    root = LocalStorage(settings.storage.local_dir).root
    return [(root / str(key)).exists() for key in (backup.storage_key, backup.manifest_key)]


async def test_only_expired_backups_the_minimum_survives(settings: Settings,
                                                         admin: Account) -> None:
    ret = settings_with(settings, "ret-min", min_count=2)
    storage = LocalStorage(ret.storage.local_dir)
    backups = await aged_backups(ret, "ret-min", admin, [10, 11, 12, 13])
    failed = Backup(admin=admin.user.id, source="ret-min", status=BackupStatus.failed,
                    retention_days=7, created_at=utcnow() - timedelta(days=9))
    await failed.insert()

    preview = await apply_retention(ret, storage, CleanupRequest(dry_run=True, source="ret-min"))
    assert preview.dry_run
    assert {i.id for i in preview.deleted} == {backups[2].id, backups[3].id, failed.id}
    assert {i.id for i in preview.protected} == {backups[0].id, backups[1].id}
    assert all("minimum" in i.reasons[0] for i in preview.protected)
    assert all(files_of(ret, b) == [True, True] for b in backups)  # a dry run touches nothing
    assert await Backup.find({"source": "ret-min"}).count() == 5

    done = await apply_retention(ret, storage, CleanupRequest(source="ret-min"))
    assert done.deleted_count == 3
    assert done.freed_bytes == sum(b.stored_bytes or 0 for b in backups[2:])
    assert done.sources[0].good == 4
    assert done.sources[0].good_left == 2
    left = {b.id for b in await Backup.find({"source": "ret-min"}).to_list()}
    assert left == {backups[0].id, backups[1].id}
    assert [files_of(ret, b) for b in backups] == [[True, True]] * 2 + [[False, False]] * 2

    # Run again, all still expired: the minimum stays.
    again = await apply_retention(ret, storage, CleanupRequest(source="ret-min"))
    assert again.deleted_count == 0
    assert await Backup.find({"source": "ret-min"}).count() == 2


async def test_deletion_cut_short_is_finished_by_the_next_run(settings: Settings,
                                                              admin: Account) -> None:
    ret = settings_with(settings, "ret-crash", min_count=1)
    storage = LocalStorage(ret.storage.local_dir)
    backup, = await aged_backups(ret, "ret-crash", admin, [0])
    # The state a crash leaves between removing the files and removing the record.
    await Backup.get_pymongo_collection().update_one(
        {"_id": backup.id}, {"$set": {"deletingSince": utcnow(),
                                      "deletionReason": "deleted by request"}})
    for key in (backup.storage_key, backup.manifest_key):
        await storage.delete(str(key))

    result = await apply_retention(ret, storage, CleanupRequest(source="ret-crash"))
    assert [i.id for i in result.deleted] == [backup.id]
    assert "finishing an interrupted deletion" in result.deleted[0].reasons[0]
    assert await Backup.get(backup.id) is None


async def test_cleanup_endpoint(client: httpx.AsyncClient, admin: Account,
                                viewer: Account) -> None:
    preview = await client.post("/api/backups/cleanup", json={"dryRun": True, "source": "pg"},
                                headers=admin.headers)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["dryRun"] is True
    assert {"deleted", "protected", "sources", "deletedCount", "freedBytes"} <= set(body)

    unknown = await client.post("/api/backups/cleanup", json={"source": "nope"},
                                headers=admin.headers)
    assert unknown.status_code == 422
    assert "Unknown source 'nope'" in unknown.json()["error"]["message"]
    extra = await client.post("/api/backups/cleanup", json={"dry_run": "yes please"},
                              headers=admin.headers)
    assert extra.status_code == 422
    denied = await client.post("/api/backups/cleanup", json={"dryRun": True},
                               headers=viewer.headers)
    assert denied.status_code == 403

    # A real run is a job; nothing of `mongo` is old enough to go.
    run = await client.post("/api/backups/cleanup?wait=true", json={"source": "mongo"},
                            headers=admin.headers)
    assert run.status_code == 200, run.text
    job = run.json()
    assert (job["kind"], job["status"]) == ("cleanup", "completed"), job
    assert job["result"]["dryRun"] is False
    assert job["result"]["deletedCount"] == 0
