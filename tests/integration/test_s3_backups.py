"""The same backups, verifies and restores with MinIO as the storage."""

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Settings
from app.models.backup import VerificationState
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.services.artifacts.stages import collect
from app.services.databases.backup import back_up
from app.services.databases.restore import restore
from app.services.databases.verify import verify
from app.services.jobs.runner import Progress
from app.services.storage.s3 import S3Storage
from tests.support.accounts import Account
from tests.support.data import mongo_snapshot, pg_snapshot
from tests.support.settings import (
    MONGO_DB,
    MONGO_URI,
    PG_DB,
    RUN,
    S3_ACCESS,
    S3_ENDPOINT,
    S3_SECRET,
    pg_uri,
)

pytestmark = pytest.mark.usefixtures("source_databases")


@pytest.fixture
async def s3_settings(app: FastAPI, settings: Settings) -> Settings:
    changed = settings.model_copy(update={"storage": settings.storage.model_copy(update={
        "backend": "s3", "s3_bucket": "backvault-test", "s3_prefix": f"engine-{RUN}",
        "s3_endpoint_url": S3_ENDPOINT, "s3_access_key": SecretStr(S3_ACCESS),
        "s3_secret_key": SecretStr(S3_SECRET)})})
    await S3Storage.from_settings(changed).ensure_bucket()
    return changed


@pytest.mark.parametrize(("source", "target"), [("pg", f"bv_s3pg_{RUN}"),
                                                ("mongo", f"bv_s3mongo_{RUN}")])
async def test_backup_verify_restore_through_minio(s3_settings: Settings, admin: Account,
                                                   source: str, target: str) -> None:
    storage = S3Storage.from_settings(s3_settings)
    backup = await back_up(s3_settings, storage, Progress(), DatabaseBackupCreate(source=source),
                           admin=admin.user.id)
    assert backup.storage_backend == "s3"
    info = await storage.stat(str(backup.storage_key))
    assert info is not None
    assert info.size == backup.stored_bytes
    manifest = await collect(storage.get(str(backup.manifest_key)))
    assert backup.sha256 is not None
    assert backup.sha256.encode() in manifest
    result = await verify(s3_settings, storage, backup.id, Progress())  # type: ignore[arg-type]
    assert result.state is VerificationState.passed, result.error
    await restore(s3_settings, storage, backup.id,  # type: ignore[arg-type]
                  RestoreRequest(target_database=target), Progress(), admin.user.id)
    if source == "pg":
        assert await pg_snapshot(pg_uri(target)) == await pg_snapshot(pg_uri(PG_DB))
    else:
        assert await mongo_snapshot(MONGO_URI, target) == await mongo_snapshot(MONGO_URI,
                                                                               MONGO_DB)
