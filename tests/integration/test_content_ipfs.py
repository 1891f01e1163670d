"""IPFS content against a real (offline) Kubo: back up, lose it, import it back, compare;
a gateway that corrupts, drops, truncates or redirects is caught."""

import os
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.config import ContentSourceKind, ContentSourceSettings, Settings
from app.models.backup import Backup
from app.models.common import utcnow
from app.models.content import ContentBackupCreate, ContentItem, ContentObject, ItemStatus
from app.models.requests import CleanupRequest
from app.services.access.auth import system_user_id
from app.services.catalog.retention import apply_retention
from app.services.content.backup import back_up_content
from app.services.content.formats.car import CarReader
from app.services.content.formats.cid import parse_cid
from app.services.content.items import list_items
from app.services.content.outbound import outbound_for
from app.services.jobs.runner import Progress
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.gateway import TamperingGateway
from tests.support.jobs import wait_job
from tests.support.settings import IPFS_API, IPFS_GATEWAY, MONGO_URI


async def kubo(path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.post(f"{IPFS_API}/api/v0/{path}", **kwargs)
    assert answer.status_code == 200, answer.text
    return answer


async def add(files: dict[str, bytes], **options: str) -> dict[str, str]:
    """Add files (names may hold directories) to Kubo; returns name → CID."""
    answer = await kubo("add", params={"pin": "true", **options},
                        files=[("file", (name, data)) for name, data in files.items()])
    return {entry["Name"]: entry["Hash"] for entry in map(_json, answer.text.splitlines())}


def _json(line: str) -> dict[str, str]:
    import json

    parsed: dict[str, str] = json.loads(line)
    return parsed


async def cat(cid: str) -> bytes | None:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(f"{IPFS_API}/api/v0/cat", params={"arg": cid,
                                                                       "offline": "true"})
    return answer.content if answer.status_code == 200 else None


async def forget(cids: list[str]) -> None:
    """Unpin and garbage-collect, so the node no longer has the blocks."""
    for cid in cids:
        async with httpx.AsyncClient(timeout=60) as client:
            await client.post(f"{IPFS_API}/api/v0/pin/rm", params={"arg": cid})
    await kubo("repo/gc")


@pytest.fixture
async def app_files(app: FastAPI, settings: Settings) -> AsyncIterator[Any]:
    """The application collection the `ipfs-files` source reads CIDs from."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    collection = client[settings.catalog.database]["app_files"]
    await collection.delete_many({})
    yield collection
    await collection.delete_many({})
    await client.close()


def sample_files() -> dict[str, tuple[bytes, dict[str, str]]]:
    seed = os.urandom(16)
    one_block = b"one block " + seed
    many = os.urandom(700_000)  # three 256 KiB chunks
    return {
        "small-v0": (one_block, {}),
        "multi-v0": (many, {"chunker": "size-262144"}),
        "multi-raw-v1": (os.urandom(600_000), {"cid-version": "1", "raw-leaves": "true",
                                               "chunker": "size-131072"}),
        "inline-v1": (b"v1 " + seed, {"cid-version": "1"}),
    }


async def test_ipfs_backup_loss_and_import(client: httpx.AsyncClient, admin: Account,
                                           superadmin: Account, app_files: Any,
                                           settings: Settings) -> None:
    files = sample_files()
    cids: dict[str, str] = {}
    for name, (data, options) in files.items():
        cids[name] = (await add({name: data}, **options))[name]
    tree = await add({"site/index.html": b"<h1>hi</h1>", "site/img/a.bin": os.urandom(300_000),
                      "site/img/b.txt": b"b"}, **{"cid-version": "1", "raw-leaves": "true"})
    cids["site"] = tree["site"]
    assert cids["small-v0"].startswith("Qm")
    assert cids["multi-raw-v1"].startswith("bafk") or cids["multi-raw-v1"].startswith("bafy")
    await app_files.insert_many([{"name": n, "cid": c} for n, c in cids.items()]
                                + [{"name": "gateway-url", "cid": f"{IPFS_GATEWAY}/ipfs/"
                                                                  f"{cids['small-v0']}"}])

    started = await client.post("/api/backups/content", json={"source": "ipfs-files"},
                                headers=admin.headers)
    assert started.status_code == 202, started.text
    job = await wait_job(client, admin.headers, started.json()["id"])
    assert job["status"] == "completed", job
    assert job["result"]["failedItems"] == 0
    assert job["result"]["new"] == 6  # two items name one CID: fetched once, both new
    backup_id = job["result"]["backupId"]
    # Verified right after it completed, like a database backup.
    history = (await client.get(f"/api/backups/{backup_id}/verifications",
                                headers=admin.headers)).json()
    assert [(r["trigger"], r["result"]) for r in history] == [("after_backup", "passed")]
    items = (await client.get(f"/api/backups/{backup_id}/items", headers=admin.headers)).json()
    assert len(items) == 6
    site = next(i for i in items if i["reference"] == cids["site"])
    assert len(site["objects"]) == 5  # site, img, and the three files
    objects_before = await ContentObject.count()

    # Second run: nothing is fetched again.
    again = await wait_job(client, admin.headers, (await client.post(
        "/api/backups/content", json={"source": "ipfs-files"}, headers=admin.headers)
        ).json()["id"])
    assert again["status"] == "completed", again
    assert (again["result"]["new"], again["result"]["existing"]) == (0, 6)
    assert await ContentObject.count() == objects_before

    # Verify re-reads every object.
    checked = await client.post(f"/api/backups/{backup_id}/verify?wait=true",
                                headers=admin.headers)
    assert checked.json()["status"] == "completed", checked.json()

    # The node loses everything; the import brings it back, byte for byte.
    await forget(list(cids.values()))
    assert await cat(cids["multi-v0"]) is None
    imported = await client.post(f"/api/backups/{backup_id}/import?wait=true", json={},
                                 headers=superadmin.headers)
    assert imported.json()["status"] == "completed", imported.json()
    assert set(imported.json()["result"]["imported"]) == set(cids.values())
    for name, (data, _) in files.items():
        assert await cat(cids[name]) == data, name
    assert await cat(f"{cids['site']}/index.html") == b"<h1>hi</h1>"
    pins = (await kubo("pin/ls", params={"type": "recursive"})).json()["Keys"]
    assert set(cids.values()) <= set(pins)

    # The export is one CAR holding every item; each block checks out.
    exported = await client.get(f"/api/backups/{backup_id}/export.car",
                                headers=superadmin.headers)
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/vnd.ipld.car"

    async def body() -> AsyncGenerator[bytes, None]:
        yield exported.content

    reader = CarReader(body())
    blocks = [b async for b in reader.blocks()]
    assert {str(r) for r in reader.roots} == set(cids.values())
    assert all(b.cid.matches(b.data) for b in blocks)
    assert len({b.cid for b in blocks}) == len(blocks)


def with_gateways(settings: Settings, *gateways: str, **content: Any) -> Settings:
    return settings.model_copy(update={"content": settings.content.model_copy(update={
        "ipfs_gateways": list(gateways), "retries": 0,
        "sources": [ContentSourceSettings(name="ipfs-files", kind=ContentSourceKind.static,
                                          items=content.pop("items"))], **content})})


async def backup_items(settings: Settings) -> list[ContentItem]:
    backup = await back_up_content(settings, LocalStorage(settings.storage.local_dir),
                                   Progress(), ContentBackupCreate(source="ipfs-files"),
                                   admin=await system_user_id())
    return await ContentItem.find({"backupId": backup.id}).to_list()


@pytest.mark.parametrize(("mode", "reason"), [
    ("flip", "does not match its CID"),
    ("drop", "never arrived"),
    ("truncate", "never arrived"),
    ("redirect", "Refused to fetch"),
])
async def test_a_lying_gateway_is_caught(settings: Settings, app: FastAPI, mode: str,
                                         reason: str) -> None:
    data = os.urandom(900_000)
    cid = (await add({f"lie-{mode}": data}, chunker="size-262144"))[f"lie-{mode}"]
    with TamperingGateway(IPFS_GATEWAY, mode, redirect_to="http://10.0.0.1:8080") as bad:
        item, = await backup_items(with_gateways(settings, bad.url, items=[cid]))
    assert item.status is ItemStatus.failed
    assert item.error is not None
    assert reason in item.error, item.error
    assert await ContentObject.get(f"ipfs:{cid}") is None
    stored = LocalStorage(settings.storage.local_dir).root / "content" / "ipfs"
    assert not list(stored.glob(f"{cid}.*"))  # nothing half-stored

    # With an honest gateway after it, the item is stored from that one.
    with TamperingGateway(IPFS_GATEWAY, mode, redirect_to="http://10.0.0.1:8080") as bad:
        item, = await backup_items(with_gateways(settings, bad.url, IPFS_GATEWAY, items=[cid]))
    assert item.status is ItemStatus.new, item.error
    assert bad.requests == 1


async def test_size_limit_while_streaming(settings: Settings, app: FastAPI) -> None:
    cid = (await add({"big": os.urandom(2_000_000)}))["big"]
    item, = await backup_items(with_gateways(settings, IPFS_GATEWAY, items=[cid],
                                             max_file_size=1_000_000))
    assert item.status is ItemStatus.failed
    assert "larger than the limit of 1000000 bytes" in (item.error or "")
    assert parse_cid(cid).version == 0


@pytest.mark.usefixtures("source_databases")
async def test_full_backup_is_one_job(client: httpx.AsyncClient, admin: Account,
                                      app_files: Any) -> None:
    cid = (await add({"full.txt": os.urandom(1000)}))["full.txt"]
    await app_files.insert_one({"cid": cid})
    started = await client.post("/api/backups/full", json={
        "sources": ["pg"], "contentSources": ["ipfs-files"], "retentionDays": 3},
        headers=admin.headers)
    assert started.status_code == 202, started.text
    job = await wait_job(client, admin.headers, started.json()["id"])
    assert job["status"] == "completed", job
    parts = {p["source"]: p for p in job["result"]["backups"]}
    assert parts["pg"]["status"] == parts["ipfs-files"]["status"] == "completed"
    content = (await client.get(f"/api/backups/{parts['ipfs-files']['backupId']}",
                                headers=admin.headers)).json()
    assert (content["kind"], content["retentionDays"]) == ("content", 3)
    bad = await client.post("/api/backups/full", json={"contentSources": ["nope"]},
                            headers=admin.headers)
    assert bad.status_code == 422
    assert "Unknown content source 'nope'" in bad.json()["error"]["message"]


async def test_retention_keeps_content_a_kept_backup_needs(settings: Settings,
                                                           app: FastAPI) -> None:
    shared, only_old, only_new = [(await add({n: os.urandom(5000)}))[n]
                                  for n in ("shared", "only-old", "only-new")]
    run = with_gateways(settings, IPFS_GATEWAY, items=[shared, only_old])
    run = run.model_copy(update={
        "retention": run.retention.model_copy(update={"min_count": 1}),
        "limits": run.limits.model_copy(update={"timeout_seconds": 1})})
    old = await backup_items(run)
    run.content.sources[0].items[:] = [shared, only_new]
    await backup_items(run)
    await Backup.get_pymongo_collection().update_one(
        {"_id": old[0].backup_id}, {"$set": {"createdAt": utcnow() - timedelta(days=60)}})
    await ContentObject.get_pymongo_collection().update_many(
        {}, {"$set": {"lastUsedAt": utcnow() - timedelta(minutes=5)}})
    storage = LocalStorage(settings.storage.local_dir)
    old_object = await ContentObject.get(f"ipfs:{only_old}")
    assert old_object is not None

    result = await apply_retention(run, storage, CleanupRequest(source="ipfs-files"))
    assert [i.id for i in result.deleted] == [old[0].backup_id]
    assert f"ipfs:{only_old}" in result.content_objects_deleted
    assert f"ipfs:{shared}" not in result.content_objects_deleted
    assert await ContentObject.get(f"ipfs:{only_old}") is None
    assert await storage.stat(old_object.storage_key) is None
    for kept in (shared, only_new):
        obj = await ContentObject.get(f"ipfs:{kept}")
        assert obj is not None
        assert await storage.stat(obj.storage_key) is not None
    assert await ContentItem.find({"backupId": old[0].backup_id}).count() == 0


async def test_kubo_pins_are_a_source(settings: Settings, app: FastAPI) -> None:
    cid = (await add({"pinned.txt": os.urandom(100)}))["pinned.txt"]
    pins = ContentSourceSettings(name="pins", kind=ContentSourceKind.kubo_pins,
                                 kubo_api=IPFS_API)  # type: ignore[arg-type]
    outbound = outbound_for(settings.model_copy(update={"content": settings.content.model_copy(
        update={"sources": [pins]})}))
    try:
        found = [ref async for ref, _ in list_items(settings, pins, outbound)]
    finally:
        await outbound.close()
    assert cid in found
