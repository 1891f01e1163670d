"""Liveness and readiness: /healthz answers while the catalog or the storage is gone,
/readyz names what is down; list requests share reads and still see every write."""

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Settings
from app.models.backup import Backup
from app.services.catalog.db import CatalogBusyError, SharedReads
from tests.support.accounts import Account
from tests.support.liveness import started
from tests.support.proxy import CuttingProxy
from tests.support.settings import MONGO_URI, S3_ACCESS, S3_ENDPOINT, S3_SECRET, WORK, make_settings


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    begun = time.monotonic()
    response = await client.get(path)
    return response, time.monotonic() - begun


async def test_readyz_answers_ready_when_catalog_and_storage_answer(
        client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "catalog": "up", "storage": "up"}
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["uptimeSeconds"] >= 0
    assert health.json()["replica"]


def probes(ready: httpx.Response) -> dict[str, str]:
    details: dict[str, str] = ready.json()["error"]["details"]
    return {name: details[name] for name in ("catalog", "storage")}


async def test_healthz_stays_up_while_catalog_and_storage_are_unreachable(
        app: FastAPI, settings: Settings) -> None:
    catalog = CuttingProxy(port_of(MONGO_URI))
    s3 = CuttingProxy(port_of(S3_ENDPOINT))
    catalog_port, s3_port = await catalog.start(), await s3.start()
    other = make_settings(
        catalog={"mongo_uri": SecretStr(f"mongodb://127.0.0.1:{catalog_port}/"),
                 "database": f"backvault_test_live_{uuid.uuid4().hex[:8]}"},
        storage={"backend": "s3", "s3_bucket": "backvault-test",
                 "s3_prefix": f"liveness-{uuid.uuid4().hex[:8]}",
                 "s3_endpoint_url": f"http://127.0.0.1:{s3_port}",
                 "s3_access_key": SecretStr(S3_ACCESS), "s3_secret_key": SecretStr(S3_SECRET)})
    try:
        async with started(app, settings, other) as client:
            assert (await client.get("/readyz")).status_code == 200

            s3.block()
            ready, _ = await timed_get(client, "/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "not_ready"
            assert probes(ready) == {"catalog": "up", "storage": "down"}
            assert "storage" in ready.json()["error"]["message"]

            catalog.block()
            health, took = await timed_get(client, "/healthz")
            # Liveness does not wait for the catalog: an orchestrator keeps the process.
            assert health.status_code == 200
            assert took < 0.5
            ready, took = await timed_get(client, "/readyz")
            assert ready.status_code == 503
            assert probes(ready) == {"catalog": "down", "storage": "down"}
            assert took < 5  # each check has its own short time limit

            catalog.unblock()
            s3.unblock()
            for _ in range(50):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("/readyz did not recover once catalog and storage came back")
    finally:
        await catalog.close()
        await s3.close()


async def test_readyz_names_a_missing_local_store(app: FastAPI, settings: Settings) -> None:
    store = WORK / f"live-store-{uuid.uuid4().hex[:8]}"
    other = make_settings(
        catalog={"mongo_uri": SecretStr(MONGO_URI),
                 "database": f"backvault_test_live_{uuid.uuid4().hex[:8]}"},
        storage={"local_dir": str(store), "spool_dir": str(WORK / "spool")})
    async with started(app, settings, other) as client:
        assert (await client.get("/readyz")).status_code == 200
        moved = Path(f"{store}-unmounted")
        store.rename(moved)  # as when the volume is unmounted
        try:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert probes(ready) == {"catalog": "up", "storage": "down"}
            assert (await client.get("/healthz")).status_code == 200
        finally:
            moved.rename(store)
        assert (await client.get("/readyz")).status_code == 200


async def test_probes_are_open_and_documented(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "get" in paths["/healthz"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    for path in ("/healthz", "/readyz"):
        assert (await client.get(path)).status_code in (200, 503)  # no token needed


@pytest.mark.usefixtures("empty_catalog")
async def test_concurrent_lists_share_reads_and_see_earlier_writes(
        client: httpx.AsyncClient, viewer: Account) -> None:
    for i in range(5):
        await Backup(admin=viewer.user.id, status="completed", sizeMB=float(i)).insert()

    async def listing() -> dict[str, Any]:
        response = await client.get("/api/backups", headers=viewer.headers,
                                    params={"limit": 100})
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    first = await asyncio.gather(*(listing() for _ in range(40)))
    assert all(page["total"] == 5 for page in first)
    await Backup(admin=viewer.user.id, status="completed", sizeMB=99.0).insert()
    # A list that starts after a write sees it, even right behind a burst of equal lists.
    burst = [asyncio.create_task(listing()) for _ in range(20)]
    after = await listing()
    assert after["total"] == 6
    assert after["items"][0]["sizeMB"] == 99.0
    assert {page["total"] for page in await asyncio.gather(*burst)} == {6}


async def test_shared_reads_share_only_reads_that_have_not_started() -> None:
    reads = SharedReads(slots=4, wait_seconds=30)
    calls = 0
    release = asyncio.Event()

    async def slow() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    first = asyncio.create_task(reads.read("k", slow))
    await asyncio.sleep(0.01)
    # These arrive while the first read runs: they wait for it (though slots are free)
    # and share one later read, never the first.
    waiting = [asyncio.create_task(reads.read("k", slow)) for _ in range(30)]
    await asyncio.sleep(0.05)
    assert calls == 1
    release.set()
    assert await first == 1
    assert {await w for w in waiting} == {2}
    assert calls == 2


async def test_shared_reads_refuse_a_long_wait_for_a_slot() -> None:
    reads = SharedReads(slots=1, wait_seconds=0.2)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(reads.read("a", slow))
    await asyncio.sleep(0.01)
    with pytest.raises(CatalogBusyError):
        await reads.read("b", slow)  # the one slot stays taken longer than wait_seconds
    release.set()
    assert await first == "done"
