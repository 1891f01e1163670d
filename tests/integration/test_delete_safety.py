"""DELETE keeps the retention minimum, spares backups in use, and goes through a trash."""

from datetime import timedelta

import httpx
import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI

from app.config import Settings
from app.errors import ConflictError
from app.models.backup import Backup, BackupStatus
from app.models.common import utcnow
from app.models.job import BackupJob, JobKind, JobStatus
from app.models.requests import CleanupRequest
from app.services.catalog import trash
from app.services.catalog.retention import apply_retention
from app.services.catalog.stats import backup_health
from tests.support.accounts import Account
from tests.support.delete_cancel import (
    app_runner_paused,
    files_of,
    real_backup,
    store,
    with_source,
)
from tests.support.settings import PG_DB, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases")


def delete_url(backup: Backup | PydanticObjectId | None, **params: str) -> str:
    backup_id = backup.id if isinstance(backup, Backup) else backup
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/api/backups/{backup_id}" + (f"?{query}" if query else "")


async def test_delete_keeps_the_minimum_unless_forced_with_a_reason(
        client: httpx.AsyncClient, settings: Settings, superadmin: Account) -> None:
    assert settings.retention.min_count == 3
    ours = with_source(settings, "del-min", pg_uri(PG_DB))
    made = [await real_backup(ours, "del-min", superadmin.user.id) for _ in range(4)]
    headers = superadmin.headers

    first = await client.delete(delete_url(made[0]), headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "deleted"

    refused = await client.delete(delete_url(made[1]), headers=headers)
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]["message"]
    assert "retention.min_count = 3" in message
    assert "force=true" in message
    assert refused.json()["error"]["details"]["goodLeft"] == 2

    for params in ({"force": "true"}, {"force": "true", "reason": "%20%20"}):
        no_reason = await client.delete(delete_url(made[1], **params), headers=headers)
        assert no_reason.status_code == 422, no_reason.text
        assert "reason" in no_reason.json()["error"]["message"]
    assert (await Backup.get(made[1].id)).status is BackupStatus.completed  # type: ignore[union-attr]

    forced = await client.delete(delete_url(made[1], force="true", reason="disk%20full"),
                                 headers=headers)
    assert forced.status_code == 200, forced.text
    assert forced.json()["deletionReason"] == (
        f"deleted by {superadmin.user.username} (forced: disk full)")

    listed = (await client.get("/api/backups?source=del-min", headers=headers)).json()
    assert {b["id"] for b in listed["items"]} == {str(made[2].id), str(made[3].id)}
    trashed = (await client.get("/api/backups?source=del-min&status=deleted",
                                headers=headers)).json()
    assert {b["id"] for b in trashed["items"]} == {str(made[0].id), str(made[1].id)}


async def test_trash_keeps_everything_and_undelete_brings_it_back(
        client: httpx.AsyncClient, settings: Settings, superadmin: Account,
        admin: Account) -> None:
    ours = with_source(settings, "del-undo", pg_uri(PG_DB))
    backup = await real_backup(ours, "del-undo", superadmin.user.id)
    before = files_of(ours, backup.id)
    assert len(before) == 2  # the object and its manifest
    digest = backup.sha256

    gone = (await client.delete(delete_url(backup, force="true", reason="testing"),
                                headers=superadmin.headers)).json()
    assert gone["status"] == "deleted"
    assert gone["statusBeforeDelete"] == "completed"
    assert gone["deletedBy"] == superadmin.user.username
    assert gone["deletedAt"] is not None
    assert files_of(ours, backup.id) == before  # kept while in the trash
    one = await client.get(f"/api/backups/{backup.id}", headers=admin.headers)
    assert one.json()["status"] == "deleted"

    # Not readable while in the trash, and not deletable twice without force.
    verify = await client.post(f"/api/backups/{backup.id}/verify", headers=admin.headers)
    assert verify.status_code == 409, verify.text
    restore = await client.post(f"/api/backups/{backup.id}/restore",
                                json={"dryRun": True}, headers=superadmin.headers)
    assert restore.status_code == 409, restore.text
    again = await client.delete(delete_url(backup), headers=superadmin.headers)
    assert again.status_code == 409
    denied = await client.post(f"/api/backups/{backup.id}/undelete", headers=admin.headers)
    assert denied.status_code == 403

    back = await client.post(f"/api/backups/{backup.id}/undelete",
                             headers=superadmin.headers)
    assert back.status_code == 200, back.text
    body = back.json()
    assert body["status"] == "completed"
    assert (body["deletedAt"], body["deletedBy"], body["statusBeforeDelete"]) == (None,) * 3
    assert body["sha256"] == digest
    assert files_of(ours, backup.id) == before
    twice = await client.post(f"/api/backups/{backup.id}/undelete", headers=superadmin.headers)
    assert twice.status_code == 409
    missing = await client.post(f"/api/backups/{PydanticObjectId()}/undelete",
                                headers=superadmin.headers)
    assert missing.status_code == 404
    verified = await client.post(f"/api/backups/{backup.id}/verify?wait=true",
                                 headers=admin.headers)
    assert verified.json()["status"] == "completed", verified.text


async def test_retention_empties_the_trash_after_trash_days(
        settings: Settings, superadmin: Account) -> None:
    ours = with_source(settings, "del-purge", pg_uri(PG_DB), retention={"min_count": 0})
    old, recent = [await real_backup(ours, "del-purge", superadmin.user.id) for _ in range(2)]
    for backup in (old, recent):
        await trash.delete_backup(ours, store(ours), backup.id, "someone", reason="test")  # type: ignore[arg-type]
    await Backup.get_pymongo_collection().update_one(
        {"_id": old.id}, {"$set": {"deletedAt": utcnow() - timedelta(days=7, minutes=1)}})

    preview = await apply_retention(ours, store(ours),
                                    CleanupRequest(dry_run=True, source="del-purge"))
    assert [i.id for i in preview.deleted] == [old.id]
    assert "retention.trash_days = 7" in preview.deleted[0].reasons[0]
    done = await apply_retention(ours, store(ours), CleanupRequest(source="del-purge"))
    assert [i.id for i in done.deleted] == [old.id]
    assert await Backup.get(old.id) is None
    assert files_of(ours, old.id) == []
    kept = await Backup.get(recent.id)
    assert kept is not None
    assert kept.status is BackupStatus.deleted
    assert len(files_of(ours, recent.id)) == 2

    # No trash at all: a delete removes at once.
    no_trash = with_source(settings, "del-purge", pg_uri(PG_DB),
                           retention={"min_count": 0, "trash_days": 0})
    now_gone = await real_backup(no_trash, "del-purge", superadmin.user.id)
    await trash.delete_backup(no_trash, store(no_trash), now_gone.id, "someone")  # type: ignore[arg-type]
    assert await Backup.get(now_gone.id) is None
    assert files_of(no_trash, now_gone.id) == []


async def test_safety_backups_never_count_toward_a_sources_minimum(
        settings: Settings, superadmin: Account) -> None:
    ours = with_source(settings, "del-safety", pg_uri(PG_DB), retention={"min_count": 2})
    own = [await real_backup(ours, "del-safety", superadmin.user.id, retention_days=7)
           for _ in range(2)]
    for backup, age in zip(own, (10, 11), strict=True):
        await Backup.get_pymongo_collection().update_one(
            {"_id": backup.id}, {"$set": {"createdAt": utcnow() - timedelta(days=age)}})
    # Newer than the source's own backups, and past their own retention of one day.
    copies = []
    for _ in range(2):
        copy = await real_backup(ours, "del-safety", superadmin.user.id, retention_days=1)
        await Backup.get_pymongo_collection().update_one(
            {"_id": copy.id}, {"$set": {"createdAt": utcnow() - timedelta(days=2),
                                        "safetyFor": own[0].id}})
        copies.append(copy)

    result = await apply_retention(ours, store(ours), CleanupRequest(source="del-safety"))
    assert {i.id for i in result.deleted} == {c.id for c in copies}
    assert {i.id for i in result.protected} == {b.id for b in own}
    assert result.sources[0].good_left == 2
    # DELETE does not count them either.
    copy = await real_backup(ours, "del-safety", superadmin.user.id)
    await Backup.get_pymongo_collection().update_one({"_id": copy.id},
                                                     {"$set": {"safetyFor": own[0].id}})
    with pytest.raises(ConflictError, match="retention.min_count = 2"):
        await trash.delete_backup(ours, store(ours), own[0].id, "someone")  # type: ignore[arg-type]


async def test_delete_refused_while_a_job_uses_the_backup(
        app: FastAPI, client: httpx.AsyncClient, settings: Settings, superadmin: Account,
        admin: Account) -> None:
    ours = with_source(settings, "del-busy", pg_uri(PG_DB))
    made = [await real_backup(ours, "del-busy", superadmin.user.id) for _ in range(4)]
    async with app_runner_paused(app):
        queued = await client.post(f"/api/backups/{made[0].id}/verify", headers=admin.headers)
        assert queued.json()["status"] == "queued"
        busy = await client.delete(delete_url(made[0], force="true", reason="x"),
                                   headers=superadmin.headers)
        assert busy.status_code == 409, busy.text
        assert f"verify job {queued.json()['id']} (queued)" in busy.json()["error"]["message"]
        cancel = await client.post(f"/api/backups/jobs/{queued.json()['id']}/cancel",
                                   headers=admin.headers)
        assert cancel.status_code == 200, cancel.text
    assert (await client.delete(delete_url(made[0]), headers=superadmin.headers)).status_code \
        == 200

    # Running on another replica (its lease is fresh): refused as well.
    now = utcnow()
    restore = BackupJob(kind=JobKind.restore, status=JobStatus.running, backup_id=made[1].id,
                        lease_owner="elsewhere:1", lease_expires_at=now + timedelta(minutes=5),
                        heartbeat_at=now, attempts=1)
    await restore.insert()
    try:
        busy = await client.delete(delete_url(made[1]), headers=superadmin.headers)
        assert busy.status_code == 409
        assert "restore job" in busy.json()["error"]["message"]
    finally:
        await BackupJob.get_pymongo_collection().update_one(
            {"_id": restore.id}, {"$set": {"status": "failed", "leaseExpiresAt": None}})
    pending = Backup(admin=superadmin.user.id, source="del-busy", job_id=restore.id)
    await pending.insert()
    writing = await client.delete(delete_url(pending), headers=superadmin.headers)
    assert writing.status_code == 409
    assert "still being written" in writing.json()["error"]["message"]
    await Backup.get_pymongo_collection().delete_one({"_id": pending.id})


@pytest.mark.usefixtures("empty_catalog")
async def test_health_is_per_source(client: httpx.AsyncClient, settings: Settings,
                                    superadmin: Account, viewer: Account) -> None:
    sources = [s.name for s in settings.all_sources()] + [
        s.name for s in settings.content.sources]
    assert "pg" in sources
    recent = utcnow() - timedelta(hours=1)
    pg_backups = []
    for name in sources:
        for _ in range(4 if name == "pg" else 1):
            backup = Backup(admin=superadmin.user.id, source=name, status="completed",
                            created_at=recent, sizeMB=1)
            await backup.insert()
            if name == "pg":
                pg_backups.append(backup)
    healthy = (await client.get("/api/backups/health", headers=viewer.headers)).json()
    assert healthy["status"] == "healthy", healthy
    assert {s["source"] for s in healthy["sources"]} == set(sources)

    for backup in pg_backups:
        done = await client.delete(delete_url(backup, force="true", reason="test"),
                                   headers=superadmin.headers)
        assert done.status_code == 200, done.text
    report = (await client.get("/api/backups/health", headers=viewer.headers)).json()
    assert report["status"] == "critical"
    assert report["hasRecentBackup"] is False
    assert "pg: No successful backup in last 24 hours" in report["issues"]
    by_source = {s["source"]: s for s in report["sources"]}
    assert by_source["pg"]["status"] == "critical"
    assert by_source["pg"]["goodBackups"] == 0
    assert by_source["pg"]["lastSuccessfulBackup"] is None
    assert all(s["status"] == "healthy" for name, s in by_source.items() if name != "pg")
    # The same from the service, as the health_check job calls it.
    assert (await backup_health(settings)).status.value == "critical"
    # Statistics show the trash apart: not in the totals or the success rate.
    stats = (await client.get("/api/backups/stats", headers=viewer.headers)).json()
    assert stats["byStatus"]["deleted"] == 4
    assert stats["totalBackups"] == len(sources) - 1
    assert stats["successRate"]["successRate"] == 100.0
