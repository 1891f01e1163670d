"""Back up, verify and restore PostgreSQL and MongoDB through the API, value for value."""

import json
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.data import mongo_snapshot, pg_snapshot
from tests.support.jobs import wait_job
from tests.support.settings import MONGO_DB, MONGO_URI, PG_DB, RUN, WORK, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases")


async def backup_of(client: httpx.AsyncClient, admin: Account, body: dict[str, Any]
                    ) -> dict[str, Any]:
    started = await client.post("/api/backups/database", json=body, headers=admin.headers)
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued"
    job = await wait_job(client, admin.headers, started.json()["id"])
    assert job["status"] == "completed", job
    backup: dict[str, Any] = (await client.get(f"/api/backups/{job['backupId']}",
                                               headers=admin.headers)).json()
    return backup


async def test_postgres_round_trip(client: httpx.AsyncClient, admin: Account,
                                   superadmin: Account, settings: Settings) -> None:
    before = await pg_snapshot(pg_uri(PG_DB))
    backup = await backup_of(client, admin, {"source": "pg", "notes": "nightly test",
                                             "retentionDays": 14})
    assert backup["status"] == "completed"
    assert backup["kind"] == "postgres"
    assert backup["formatChain"] == ["pgdump", "zst", "age"]
    assert backup["encrypted"] is True
    assert backup["retentionDays"] == 14
    assert len(backup["sha256"]) == 64
    assert backup["storedBytes"] > 0
    assert backup["plaintextBytes"] > backup["storedBytes"] / 4
    assert backup["sizeMB"] == pytest.approx(backup["storedBytes"] / 1024 / 1024, abs=1e-5)
    assert backup["serverVersion"].startswith("15")
    assert "pg_dump" in backup["toolVersion"]
    counts = {c["name"]: c["count"] for c in backup["contents"]}
    assert counts == {"public.authors": 4, "public.posts": 500, "other.Mixed Case": 3}
    assert backup["storageKey"].startswith("pg/")
    assert backup["storageKey"].endswith(f"{backup['id']}.pgdump.zst.age")

    store = LocalStorage(settings.storage.local_dir)
    manifest = json.loads((store.root / backup["manifestKey"]).read_text())
    assert manifest["sha256"] == backup["sha256"]
    assert manifest["restoreCommand"].startswith("createdb -h HOST -p PORT -U USER -T template0 "
                                                 "NEW_DB && age -d -i key.txt ")
    assert manifest["restoreCommand"].endswith(
        "| zstd -d -c | pg_restore --no-owner -h HOST -p PORT -U USER -d NEW_DB")
    assert manifest["database"] == PG_DB
    assert manifest["contents"] == backup["contents"]

    verified = await client.post(f"/api/backups/{backup['id']}/verify?wait=true",
                                 headers=admin.headers)
    assert verified.status_code == 200
    assert verified.json()["status"] == "completed", verified.json()
    record = (await client.get(f"/api/backups/{backup['id']}", headers=admin.headers)).json()
    assert record["verification"]["state"] == "passed"
    assert record["verification"]["deep"] is True
    assert record["verification"]["sha256Ok"] is True
    assert {c["name"] for c in record["verification"]["contents"]} == set(counts)

    target = f"bv_restored_{RUN}"
    plan = await client.post(f"/api/backups/{backup['id']}/restore", headers=superadmin.headers,
                             json={"targetDatabase": target, "dryRun": True})
    assert plan.status_code == 200, plan.text
    assert plan.json()["targetExists"] is False
    assert {i["action"] for i in plan.json()["items"]} == {"create"}
    assert plan.json()["compatible"] is True
    assert (await pg_snapshot(pg_uri(PG_DB))) == before  # the dry run touched nothing

    restored = await client.post(f"/api/backups/{backup['id']}/restore?wait=true",
                                 headers=superadmin.headers, json={"targetDatabase": target})
    assert restored.status_code == 200
    job = restored.json()
    assert job["status"] == "completed", job
    assert {"name": "public.posts", "count": 500} in job["result"]["counts"]
    assert job["result"]["safetyBackupId"] is None  # the target did not exist
    assert await pg_snapshot(pg_uri(target)) == before
    record = (await client.get(f"/api/backups/{backup['id']}", headers=admin.headers)).json()
    assert record["status"] == "restored"
    assert record["restoredAt"] is not None

    # Into a database that now holds data: refused without dropExisting...
    again = await client.post(f"/api/backups/{backup['id']}/restore",
                              headers=superadmin.headers, json={"targetDatabase": target})
    assert again.status_code == 409
    assert "dropExisting" in again.json()["error"]["message"]
    # ...and with it, a safety backup of the target is taken first.
    replaced = await client.post(f"/api/backups/{backup['id']}/restore?wait=true",
                                 headers=superadmin.headers,
                                 json={"targetDatabase": target, "dropExisting": True,
                                       "confirm": target})
    result = replaced.json()
    assert result["status"] == "completed", result
    safety = (await client.get(f"/api/backups/{result['result']['safetyBackupId']}",
                               headers=admin.headers)).json()
    assert safety["status"] == "completed"
    assert safety["retentionDays"] == 7
    assert "Pre-restore backup" in safety["notes"]
    assert await pg_snapshot(pg_uri(target)) == before


async def test_postgres_selective_backups(client: httpx.AsyncClient, admin: Account) -> None:
    only_posts = await backup_of(client, admin, {"source": "pg", "tables": ["posts"],
                                                 "dataOnly": True})
    assert [c["name"] for c in only_posts["contents"]] == ["public.posts"]
    assert only_posts["options"]["dataOnly"] is True
    schema = await backup_of(client, admin, {"source": "pg", "schemaOnly": True})
    assert all(c["count"] is None for c in schema["contents"])
    assert schema["plaintextBytes"] < only_posts["plaintextBytes"]


async def test_mongodb_round_trip(client: httpx.AsyncClient, admin: Account,
                                  superadmin: Account) -> None:
    before = await mongo_snapshot(MONGO_URI, MONGO_DB)
    backup = await backup_of(client, admin, {"source": "mongo"})
    assert backup["formatChain"] == ["mongoarchive", "zst", "age"]
    assert {c["name"]: c["count"] for c in backup["contents"]} == {
        "empty": 0, "items": 300, "people": 50}
    verified = await client.post(f"/api/backups/{backup['id']}/verify?wait=true",
                                 headers=admin.headers)
    assert verified.json()["status"] == "completed", verified.json()
    assert verified.json()["result"]["contents"] == backup["contents"]

    target = f"bv_mrestored_{RUN}"
    restored = await client.post(f"/api/backups/{backup['id']}/restore?wait=true",
                                 headers=superadmin.headers, json={"targetDatabase": target})
    assert restored.json()["status"] == "completed", restored.json()
    after = await mongo_snapshot(MONGO_URI, target)
    assert after == before

    selected = await backup_of(client, admin, {"source": "mongo", "collections": ["people"]})
    assert [c["name"] for c in selected["contents"]] == ["people"]


@pytest.mark.parametrize(("body", "field"), [
    ({"source": "mongo", "tables": ["x"]}, "tables"),
    ({"source": "mongo", "schemaOnly": True}, "schemaOnly"),
    ({"source": "pg", "collections": ["x"]}, "collections"),
    ({"source": "nowhere"}, "source"),
    ({"source": "pg", "schemaOnly": True, "dataOnly": True}, ""),
    ({"source": "pg", "retentionDays": 0}, "retentionDays"),
    ({"source": "pg", "surprise": 1}, "surprise"),
])
async def test_bad_backup_requests(client: httpx.AsyncClient, admin: Account,
                                   body: dict[str, Any], field: str) -> None:
    response = await client.post("/api/backups/database", json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"] or field in [d.get("field") for d in error["details"]]


async def test_restore_of_a_failed_backup_is_409(client: httpx.AsyncClient,
                                                 superadmin: Account, admin: Account) -> None:
    from app.models.backup import Backup

    failed = Backup(admin=admin.user.id, status="failed", source="pg", kind="postgres")
    await failed.insert()
    for path, headers in ((f"/api/backups/{failed.id}/restore", superadmin.headers),
                          (f"/api/backups/{failed.id}/verify", admin.headers)):
        response = await client.post(path, json={}, headers=headers)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "conflict"
        assert "failed" in response.json()["error"]["message"]


async def test_files_listing_and_delete(client: httpx.AsyncClient, admin: Account,
                                        superadmin: Account) -> None:
    backup = await backup_of(client, admin, {"source": "pg", "tables": ["authors"]})
    files = (await client.get("/api/backups/files", params={"prefix": "pg/"},
                              headers=admin.headers)).json()
    keys = {f["key"] for f in files}
    assert {backup["storageKey"], backup["manifestKey"]} <= keys
    # Below the retention minimum a delete needs force and a reason; it goes to the trash
    # first (files kept), and a forced delete of a trashed backup removes it for good.
    forced = {"force": "true", "reason": "test clean-up"}
    trashed = await client.delete(f"/api/backups/{backup['id']}", params=forced,
                                  headers=superadmin.headers)
    assert trashed.status_code == 200, trashed.text
    assert trashed.json()["status"] == "deleted"
    assert (WORK / "store" / backup["storageKey"]).exists()
    gone = await client.delete(f"/api/backups/{backup['id']}", params=forced,
                               headers=superadmin.headers)
    assert gone.status_code == 200, gone.text
    assert (await client.get(f"/api/backups/{backup['id']}",
                             headers=admin.headers)).status_code == 404
    assert not (WORK / "store" / backup["storageKey"]).exists()
    assert not (WORK / "store" / backup["manifestKey"]).exists()
