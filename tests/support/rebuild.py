"""Helpers of the catalog-rebuild and deep-health tests: settings with a catalog and a
store of their own, an app started on them, and backups made through its API."""

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from app.config import Settings
from tests.support.apps import root_headers, running_app
from tests.support.jobs import wait_job
from tests.support.settings import GAIA_HUB, IPFS_API, IPFS_GATEWAY, MONGO_URI, RUN, WORK

CONTENT_SOURCE = "ipfs-rebuild"


def own_settings(base: Settings, cids: list[str], **groups: dict[str, Any]) -> Settings:
    """The test settings with a catalog database and a local store of their own, and one
    static IPFS source of cids (none without cids); `groups` change more fields of other groups."""
    tag = f"{RUN}_{uuid.uuid4().hex[:6]}"
    changes: dict[str, dict[str, Any]] = {
        "catalog": {"mongo_uri": SecretStr(MONGO_URI), "database": f"bv_rebuild_{tag}"},
        "storage": {"local_dir": WORK / f"store-{tag}", "spool_dir": WORK / f"spool-{tag}"},
        "content": {"ipfs_gateways": [IPFS_GATEWAY], "kubo_api": IPFS_API,
                    "gaia_hubs": [GAIA_HUB], "retries": 0,
                    "sources": [{"name": CONTENT_SOURCE, "kind": "static", "type": "ipfs",
                                 "items": cids}] if cids else []},
    }
    for name, fields in groups.items():
        changes[name] = {**changes.get(name, {}), **fields}
    update = {}
    for name, fields in changes.items():
        group = getattr(base, name)
        update[name] = type(group).model_validate({**group.model_dump(), **fields})
    return base.model_copy(update=update)


async def drop_catalog(settings: Settings) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    try:
        await mongo.drop_database(settings.catalog.database)
    finally:
        await mongo.close()


@asynccontextmanager
async def started(session_app: FastAPI, session_settings: Settings, settings: Settings
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A new app on `settings` through its whole start-up, with a client and the bootstrap
    superadmin's headers. Its catalog is left as it is (the caller drops it)."""
    async with running_app(session_app, session_settings, settings) as (_, client):
        yield client, await root_headers(client)


async def backed_up(client: httpx.AsyncClient, headers: dict[str, str], path: str,
                    body: dict[str, Any]) -> dict[str, Any]:
    """A backup made through the API (database or content), as the API shows it."""
    started_job = await client.post(f"/api/backups/{path}", json=body, headers=headers)
    assert started_job.status_code == 202, started_job.text
    job = await wait_job(client, headers, started_job.json()["id"])
    assert job["status"] == "completed", job
    backup: dict[str, Any] = (await client.get(f"/api/backups/{job['backupId']}",
                                               headers=headers)).json()
    return backup


async def rebuilt(client: httpx.AsyncClient, headers: dict[str, str],
                  dry_run: bool = False) -> dict[str, Any]:
    """The result of a catalog rebuild run through the API."""
    answer = await client.post("/api/catalog/rebuild?wait=true", json={"dryRun": dry_run},
                               headers=headers)
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    assert job["status"] == "completed", job
    result: dict[str, Any] = job["result"]
    return result


async def run_backvault(settings: Settings, *args: str) -> tuple[int, str, str]:
    """The `backvault` command on the catalog and local store of `settings`: exit code,
    stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({"BACKUP_CATALOG__MONGO_URI": MONGO_URI,
                "BACKUP_CATALOG__DATABASE": settings.catalog.database,
                "BACKUP_STORAGE__LOCAL_DIR": str(settings.storage.local_dir),
                "BACKUP_STORAGE__SPOOL_DIR": str(settings.storage.spool_dir),
                "BACKUP_SYSTEM__LOG_LEVEL": "warning", "COLUMNS": "200", "TERM": "dumb"})
    cli = Path(sys.executable).parent / "backvault"
    proc = await asyncio.create_subprocess_exec(
        str(cli), *args, env=env, cwd=WORK,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
