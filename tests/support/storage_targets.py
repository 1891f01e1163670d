"""Helpers of the storage-target tests: settings with a local and a MinIO target, a
target behind a cutting proxy, and damaging a stored object in place."""

import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings, StorageSettings
from app.services.artifacts.stages import collect, from_bytes
from app.services.storage import Storage
from tests.support.settings import PG_DB, S3_ACCESS, S3_ENDPOINT, S3_SECRET, WORK, pg_uri

BUCKET = "backvault-test"


def s3_target(name: str, endpoint: str = S3_ENDPOINT, prefix: str | None = None
              ) -> dict[str, Any]:
    return {"name": name, "kind": "s3", "s3_bucket": BUCKET, "s3_endpoint_url": endpoint,
            "s3_access_key": S3_ACCESS, "s3_secret_key": S3_SECRET,
            "s3_prefix": prefix or f"targets-{uuid.uuid4().hex[:8]}"}


def local_target(name: str, root: Path | None = None) -> dict[str, Any]:
    return {"name": name, "kind": "local",
            "local_dir": str(root or WORK / f"target-{uuid.uuid4().hex[:8]}")}


def with_targets(settings: Settings, targets: list[dict[str, Any]], default: str,
                 sources: list[SourceSettings] | None = None, **storage: Any) -> Settings:
    """The settings with these named targets (validated as from the environment)."""
    group = StorageSettings.model_validate({
        **settings.storage.model_dump(exclude={"targets", "default_target"}),
        "targets": targets, "default_target": default, **storage})
    update: dict[str, Any] = {"storage": group}
    if sources is not None:
        update["sources"] = [*settings.sources, *sources]
    return settings.model_copy(update=update)


def pg_source(name: str, copy_targets: list[str] | None = None) -> SourceSettings:
    """Another name for the run's PostgreSQL source database."""
    return SourceSettings(name=name, kind=SourceKind("postgres"), uri=SecretStr(pg_uri(PG_DB)),
                          copy_targets=copy_targets or [])


async def damage(storage: Storage, key: str) -> None:
    """Flip one byte in the middle of a stored object (same size, other SHA-256)."""
    data = bytearray(await collect(storage.get(key)))
    data[len(data) // 2] ^= 0xFF
    await storage.put(key, from_bytes(bytes(data)))
