"""The catalog dropped whole and rebuilt from the manifests on storage: the records come
back as they were, a restore of a rebuilt backup is value for value, retention runs on
the rebuilt catalog, and a second rebuild recreates nothing."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.models.content import ContentObject
from app.services.artifacts.stages import collect, from_bytes
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.content_targets import add_random
from tests.support.data import pg_snapshot
from tests.support.jobs import wait_job
from tests.support.rebuild import (
    CONTENT_SOURCE,
    backed_up,
    drop_catalog,
    own_settings,
    rebuilt,
    run_backvault,
    started,
)
from tests.support.settings import PG_DB, RUN, pg_uri
from tests.support.storage_targets import local_target

pytestmark = pytest.mark.usefixtures("source_databases")

# What a rebuilt record must carry exactly as the original did.
KEPT = ("source", "kind", "type", "status", "admin", "createdAt", "notes", "retentionDays",
        "storageKey", "manifestKey", "formatChain", "sha256", "storedBytes", "sizeMB",
        "plaintextBytes", "encrypted", "recipients", "serverVersion", "toolVersion",
        "contents", "database", "options", "error")


async def test_dropped_catalog_is_rebuilt_from_storage(app: FastAPI, settings: Settings
                                                       ) -> None:
    cid = await add_random(200_000)
    own = own_settings(settings, [cid], retention={"min_count": 1})
    before = await pg_snapshot(pg_uri(PG_DB))
    async with started(app, settings, own) as (client, headers):
        originals = [
            await backed_up(client, headers, "database",
                            {"source": "pg", "notes": "before the loss", "retentionDays": 14}),
            await backed_up(client, headers, "database", {"source": "mongo"}),
            await backed_up(client, headers, "content", {"source": CONTENT_SOURCE}),
        ]
        content_id = originals[2]["id"]
        car = (await client.get(f"/api/backups/{content_id}/export.car", headers=headers))
        assert car.status_code == 200
        items = (await client.get(f"/api/backups/{content_id}/items", headers=headers)).json()
        old = await backed_up(client, headers, "database", {"source": "pg", "retentionDays": 7})
    await drop_catalog(own)
    # The last one stands for a backup made 40 days ago: its manifest says so.
    store = LocalStorage(own.storage.local_dir)
    manifest = json.loads(await collect(store.get(old["manifestKey"])))
    then = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    await store.put(old["manifestKey"], from_bytes(json.dumps(
        {**manifest, "createdAt": then, "completedAt": then}).encode()))

    async with started(app, settings, own) as (client, headers):
        listed = (await client.get("/api/backups", headers=headers)).json()
        assert listed["total"] == 0
        preview = await rebuilt(client, headers, dry_run=True)
        assert preview["dryRun"] is True
        assert preview["recreatedCount"] == 4
        assert (await client.get("/api/backups", headers=headers)).json()["total"] == 0

        result = await rebuilt(client, headers)
        assert (result["recreatedCount"], result["skippedCount"],
                result["unreadableCount"]) == (4, 0, 0), result
        assert {e["id"] for e in result["recreated"]} == {b["id"] for b in [*originals, old]}
        assert result["objectsRecreated"] >= 1
        for original in originals:
            record = (await client.get(f"/api/backups/{original['id']}",
                                       headers=headers)).json()
            assert {k: record[k] for k in KEPT} == {k: original[k] for k in KEPT}
        again = (await client.get(f"/api/backups/{content_id}/items", headers=headers)).json()
        assert again == items
        car_again = await client.get(f"/api/backups/{content_id}/export.car", headers=headers)
        assert car_again.status_code == 200
        assert car_again.content == car.content

        # A restore of a rebuilt backup, value for value.
        target = f"bv_rebuilt_{RUN}"
        restored = await client.post(f"/api/backups/{originals[0]['id']}/restore?wait=true",
                                     headers=headers, json={"targetDatabase": target})
        assert restored.json()["status"] == "completed", restored.json()
        assert await pg_snapshot(pg_uri(target)) == before

        # Retention on the rebuilt catalog removes the expired backup, files and all.
        cleanup = await client.post("/api/backups/cleanup", json={}, headers=headers)
        assert cleanup.status_code == 202, cleanup.text
        job = await wait_job(client, headers, cleanup.json()["id"])
        assert job["status"] == "completed", job
        assert [d["id"] for d in job["result"]["deleted"]] == [old["id"]]
        assert (await client.get("/api/backups", headers=headers)).json()["total"] == 3
        assert await store.stat(old["storageKey"]) is None
        assert await store.stat(old["manifestKey"]) is None

        # A second run recreates nothing; something that is not a manifest is reported.
        await store.put("pg/2020/01/01/broken.manifest.json", from_bytes(b"{not json"))
        second = await rebuilt(client, headers)
        assert (second["recreatedCount"], second["skippedCount"],
                second["unreadableCount"]) == (0, 3, 1), second
        assert second["unreadable"][0]["key"] == "pg/2020/01/01/broken.manifest.json"
        assert "not JSON" in second["unreadable"][0]["reason"]
        assert second["objectsRecreated"] == 0

        # Content object records lost on their own come back; the backups are kept.
        lost = await ContentObject.get_pymongo_collection().delete_many({})
        assert lost.deleted_count == result["objectsRecreated"]
        third = await rebuilt(client, headers)
        assert (third["recreatedCount"], third["objectsRecreated"]) == (
            0, result["objectsRecreated"])
        car_third = await client.get(f"/api/backups/{content_id}/export.car", headers=headers)
        assert car_third.content == car.content

    # The command line runs the same job on the same catalog and store.
    code, out, err = await run_backvault(own, "catalog", "rebuild", "--dry-run")
    assert code == 0, err
    answer = json.loads(out)
    assert (answer["dryRun"], answer["recreatedCount"], answer["skippedCount"]) == (
        True, 0, 3), answer
    await drop_catalog(own)


async def test_rebuild_needs_superadmin_and_a_valid_body(client: httpx.AsyncClient,
                                                         admin: Account,
                                                         superadmin: Account) -> None:
    refused = await client.post("/api/catalog/rebuild", json={}, headers=admin.headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"]
    bad = await client.post("/api/catalog/rebuild", json={"dryRun": "maybe"},
                            headers=superadmin.headers)
    assert bad.status_code == 422
    extra = await client.post("/api/catalog/rebuild", json={"surprise": 1},
                              headers=superadmin.headers)
    assert extra.status_code == 422


async def test_rebuild_finds_copies_and_reports_a_missing_artifact(app: FastAPI,
                                                                   settings: Settings) -> None:
    first, second = local_target("first"), local_target("second")
    own = own_settings(settings, [], storage={"targets": [first, second],
                                              "default_target": "first"})
    async with started(app, settings, own) as (client, headers):
        copied = await backed_up(client, headers, "database",
                                 {"source": "pg", "copyTargets": ["second"]})
        assert [c["target"] for c in copied["copies"]] == ["second"]
        lost = await backed_up(client, headers, "database", {"source": "mongo"})
    await drop_catalog(own)
    await LocalStorage(Path(first["local_dir"])).delete(lost["storageKey"])

    async with started(app, settings, own) as (client, headers):
        result = await rebuilt(client, headers)
        assert (result["recreatedCount"], result["unreadableCount"]) == (1, 1), result
        assert result["recreated"][0]["target"] == "first"
        record = (await client.get(f"/api/backups/{copied['id']}", headers=headers)).json()
        assert record["storageTarget"] == "first"
        assert [(c["target"], c["sha256"], c["storedBytes"]) for c in record["copies"]] == [
            ("second", copied["sha256"], copied["storedBytes"])]
        unreadable = result["unreadable"][0]
        assert (unreadable["target"], unreadable["key"]) == ("first", lost["manifestKey"])
        assert "missing" in unreadable["reason"]
        assert (await client.get(f"/api/backups/{lost['id']}", headers=headers)).status_code \
            == 404
    await drop_catalog(own)
