"""Readiness: whether the catalog and the storage answer, each within a short time."""

import asyncio
import os
from pathlib import Path
from typing import Any

import structlog

from app.errors import AppError
from app.services.catalog.db import MongoClient, ping_catalog
from app.services.storage import LocalStorage, Storage, StorageTargets
from app.services.storage.wrappers import backend_of

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 2.0
PROBE_PREFIX = "readyz-probe/"


class NotReadyError(AppError):
    status_code = 503
    code = "not_ready"

    def __init__(self, checks: dict[str, Any]) -> None:
        down = [name for name in ("catalog", "storage") if checks.get(name) != "up"]
        details = {name: checks.get(name) for name in ("catalog", "storage")}
        if "targets" in checks:
            details["targets"] = checks["targets"]
        super().__init__("Not ready: " + " and ".join(down) + " not reachable",
                         details, headers={"Retry-After": "5"})


def _local_usable(root: Path) -> bool:
    return root.is_dir() and os.access(root, os.W_OK | os.X_OK)


async def storage_reachable(storage: Storage, timeout: float = CHECK_TIMEOUT) -> bool:
    """A local store's directory is there and writable; a remote one answers a listing."""
    try:
        async with asyncio.timeout(timeout):
            backend = backend_of(storage)
            if isinstance(backend, LocalStorage):
                return await asyncio.to_thread(_local_usable, backend.root)
            # One page of an (empty) prefix: a round trip that reads nothing big.
            async for _ in storage.list_objects(PROBE_PREFIX):
                break
    except Exception as exc:  # any failure of the probe means "down"
        log.warning("storage not reachable", error=str(exc) or type(exc).__name__)
        return False
    return True


async def readiness(mongo: MongoClient, storage: Storage | StorageTargets,
                    timeout: float = CHECK_TIMEOUT) -> dict[str, Any]:
    """All checks at once; `ready` only when the catalog and every storage target answer."""
    stores = storage.stores if isinstance(storage, StorageTargets) else {"storage": storage}
    catalog_ok, *up = await asyncio.gather(
        ping_catalog(mongo, timeout), *(storage_reachable(s, timeout) for s in stores.values()))
    checks: dict[str, Any] = {"ready": catalog_ok and all(up),
                              "catalog": "up" if catalog_ok else "down",
                              "storage": "up" if all(up) else "down"}
    if isinstance(storage, StorageTargets):
        checks["targets"] = {n: "up" if ok else "down" for n, ok in zip(stores, up, strict=True)}
    return checks
