"""Readiness: whether the catalog and the storage answer, each within a short time."""

import asyncio
import os
from pathlib import Path
from typing import Any

import structlog

from app.errors import AppError
from app.services.catalog.db import MongoClient, ping_catalog
from app.services.storage import LocalStorage, Storage

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 2.0
PROBE_PREFIX = "readyz-probe/"


class NotReadyError(AppError):
    status_code = 503
    code = "not_ready"

    def __init__(self, checks: dict[str, Any]) -> None:
        down = [name for name in ("catalog", "storage") if checks.get(name) != "up"]
        super().__init__("Not ready: " + " and ".join(down) + " not reachable",
                         {name: checks.get(name) for name in ("catalog", "storage")},
                         headers={"Retry-After": "5"})


def _local_usable(root: Path) -> bool:
    return root.is_dir() and os.access(root, os.W_OK | os.X_OK)


async def storage_reachable(storage: Storage, timeout: float = CHECK_TIMEOUT) -> bool:
    """A local store's directory is there and writable; a remote one answers a listing."""
    try:
        async with asyncio.timeout(timeout):
            if isinstance(storage, LocalStorage):
                return await asyncio.to_thread(_local_usable, storage.root)
            # One page of an (empty) prefix: a round trip that reads nothing big.
            async for _ in storage.list_objects(PROBE_PREFIX):
                break
    except Exception as exc:  # any failure of the probe means "down"
        log.warning("storage not reachable", error=str(exc) or type(exc).__name__)
        return False
    return True


async def readiness(mongo: MongoClient, storage: Storage,
                    timeout: float = CHECK_TIMEOUT) -> dict[str, Any]:
    """Both checks at once; `ready` only when both answer."""
    catalog_ok, storage_ok = await asyncio.gather(ping_catalog(mongo, timeout),
                                                  storage_reachable(storage, timeout))
    return {"ready": catalog_ok and storage_ok,
            "catalog": "up" if catalog_ok else "down",
            "storage": "up" if storage_ok else "down"}
