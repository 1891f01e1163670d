"""Named storage targets (local disk and real MinIO): each backup is read from the target
it was written to, copies stand in for a damaged primary, and cleanup survives a target
that is down."""

import asyncio
from collections.abc import AsyncGenerator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError

from app.config import Settings
from app.errors import InvalidInputError
from app.models.backup import Backup, VerificationState
from app.models.requests import CleanupRequest, DatabaseBackupCreate, RestoreRequest
from app.services.catalog.retention import apply_retention
from app.services.databases.backup import back_up
from app.services.databases.restore import plan_restore, restore
from app.services.databases.verify import verify
from app.services.jobs.runner import Progress
from app.services.storage import Storage, StorageTargets
from app.services.storage.base import StorageError
from app.services.storage.targets import UnknownTargetError
from tests.support.accounts import Account
from tests.support.proxy import CuttingProxy
from tests.support.settings import RUN, S3_ACCESS, S3_ENDPOINT, S3_SECRET
from tests.support.storage_targets import (
    damage,
    local_target,
    pg_source,
    s3_target,
    with_targets,
)

pytestmark = pytest.mark.usefixtures("source_databases")
TABLES = ["authors"]


async def _backup(settings: Settings, admin: Account, source: str = "pg",
                  copy_targets: list[str] | None = None) -> Backup:
    targets = StorageTargets.from_settings(settings)
    await targets.prepare()
    return await back_up(settings, targets, Progress(),
                         DatabaseBackupCreate(source=source, tables=TABLES,
                                              copy_targets=copy_targets or []),
                         admin=admin.user.id)


async def test_backup_on_a_is_verified_and_restored_while_default_is_b(
        settings: Settings, admin: Account) -> None:
    targets = [local_target("disk"), s3_target("minio")]
    on_minio = with_targets(settings, targets, default="minio")
    backup = await _backup(on_minio, admin)
    assert (backup.storage_target, backup.storage_backend) == ("minio", "s3")

    on_disk = with_targets(settings, targets, default="disk")
    disk = StorageTargets.from_settings(on_disk)
    assert await disk.default.stat(str(backup.storage_key)) is None  # not on the default
    result = await verify(on_disk, disk, backup.id, Progress())  # type: ignore[arg-type]
    assert result.state is VerificationState.passed, result.error
    done = await restore(on_disk, disk, backup.id,  # type: ignore[arg-type]
                         RestoreRequest(target_database=f"bv_tgt_ab_{RUN}"), Progress(),
                         admin.user.id)
    assert done["restoredFromCopy"] is None
    assert [c["name"] for c in done["counts"]] == ["public.authors"]


@pytest.mark.parametrize(("primary", "copy"), [("disk", "minio"), ("minio", "disk")])
async def test_copy_serves_a_restore_when_the_primary_is_damaged(
        settings: Settings, admin: Account, primary: str, copy: str) -> None:
    ours = with_targets(settings, [local_target("disk"), s3_target("minio")], default=primary,
                        sources=[pg_source(f"tgt-copy-{primary}", copy_targets=[copy])])
    backup = await _backup(ours, admin, source=f"tgt-copy-{primary}")
    assert [(c.target, c.sha256, c.verification.state) for c in backup.copies] == [
        (copy, backup.sha256, VerificationState.passed)]
    targets = StorageTargets.from_settings(ours)
    assert await targets.named(copy).stat(str(backup.manifest_key)) is not None

    await damage(targets.named(primary), str(backup.storage_key))
    plan = await plan_restore(ours, targets, backup, RestoreRequest(
        target_database=f"bv_tgt_copy_{primary}_{RUN}", dry_run=True))
    assert plan.artifact_ok  # same size: the damage shows only in the full read
    done = await restore(ours, targets, backup.id,  # type: ignore[arg-type]
                         RestoreRequest(target_database=f"bv_tgt_copy_{primary}_{RUN}"),
                         Progress(), admin.user.id)
    assert done["restoredFromCopy"] == copy
    assert f"restored from copy on target {copy}" in done["note"]
    assert "damaged" in done["note"]

    checked = await verify(ours, targets, backup.id, Progress())  # type: ignore[arg-type]
    assert checked.state is VerificationState.failed
    stored = await Backup.get(backup.id)
    assert stored is not None
    assert stored.copies[0].verification.state is VerificationState.passed
    # The recorded failure of the primary no longer stops a restore: the copy is good.
    plan = await plan_restore(ours, targets, stored, RestoreRequest(
        target_database=f"bv_tgt_copy_{primary}_{RUN}", dry_run=True))
    assert plan.read_from_copy == copy
    assert plan.artifact_ok


async def test_legacy_records_map_to_their_backend(settings: Settings,
                                                    admin: Account) -> None:
    prefix = f"legacy-{RUN}"
    legacy_s3 = settings.model_copy(update={"storage": settings.storage.model_copy(update={
        "backend": "s3", "s3_bucket": "backvault-test", "s3_prefix": prefix,
        "s3_endpoint_url": S3_ENDPOINT, "s3_access_key": SecretStr(S3_ACCESS),
        "s3_secret_key": SecretStr(S3_SECRET)})})
    backup = await _backup(legacy_s3, admin)
    assert (backup.storage_target, backup.storage_backend) == (None, "s3")
    written = await Backup.get(backup.id)
    assert written is not None
    recorded = written.verification.model_dump()  # the after-backup verification's

    # Switched back to the local backend alone: a clear error, never "missing -> failed".
    local_only = StorageTargets.from_settings(settings)
    with pytest.raises(UnknownTargetError, match="storage target 's3'"):
        await verify(settings, local_only, backup.id, Progress())  # type: ignore[arg-type]
    stored = await Backup.get(backup.id)
    assert stored is not None
    assert stored.verification.model_dump() == recorded  # untouched

    # Named targets later: the record maps to the one S3 target, whatever its name.
    named = with_targets(settings, [local_target("disk"), s3_target("archive", prefix=prefix)],
                         default="disk")
    assert backup.id is not None
    result = await verify(named, StorageTargets.from_settings(named), backup.id, Progress())
    assert result.state is VerificationState.passed, result.error


async def test_cleanup_survives_an_unreachable_target(settings: Settings,
                                                      admin: Account) -> None:
    proxy = CuttingProxy(urlsplit(S3_ENDPOINT).port or 80)
    port = await proxy.start()
    targets = [local_target("disk"), s3_target("far", endpoint=f"http://127.0.0.1:{port}")]
    source = pg_source(f"tgt-clean-{RUN}"[:60])
    on_far = with_targets(settings, targets, default="far", sources=[source],
                          retries=1, retry_base_seconds=0.05)
    on_disk = with_targets(settings, targets, default="disk", sources=[source],
                           retries=1, retry_base_seconds=0.05)
    try:
        far = await _backup(on_far, admin, source=source.name)
        near = await _backup(on_disk, admin, source=source.name)
        await _backup(on_disk, admin, source=source.name)  # the newest: kept
        keep_one = on_disk.model_copy(update={"retention": on_disk.retention.model_copy(
            update={"max_count": 1, "min_count": 0})})
        live = StorageTargets.from_settings(keep_one)
        proxy.block()
        result = await apply_retention(keep_one, live, CleanupRequest(source=source.name))
        assert [str(i.id) for i in result.deleted] == [str(near.id)]
        assert len(result.errors) == 1
        assert str(far.id) in result.errors[0]
        assert await Backup.get(far.id) is not None

        proxy.unblock()
        again = await apply_retention(keep_one, live, CleanupRequest(source=source.name))
        assert [str(i.id) for i in again.deleted] == [str(far.id)]
        assert again.errors == []
    finally:
        await proxy.close()


async def test_bandwidth_cap_holds_reads_and_writes(settings: Settings) -> None:
    capped = with_targets(settings, [local_target("disk")], default="disk")
    capped = capped.model_copy(update={"limits": capped.limits.model_copy(
        update={"bandwidth_mbps": 1.0})})
    store = StorageTargets.from_settings(capped).default
    data = b"x" * (2 * 1024 * 1024)
    loop = asyncio.get_running_loop()

    started = loop.time()
    await store.put("throttle/object", _chunks(data))
    wrote = loop.time() - started
    started = loop.time()
    read = b"".join([chunk async for chunk in store.get("throttle/object")])
    took = loop.time() - started
    assert read == data
    # 2 MB at 1 MB/s: about two seconds each way (generous lower bound).
    assert wrote >= 1.5
    assert took >= 1.5


async def test_transient_failures_are_mapped_and_retried(settings: Settings) -> None:
    proxy = CuttingProxy(urlsplit(S3_ENDPOINT).port or 80)
    port = await proxy.start()
    prefix = f"retry-{RUN}"
    direct = with_targets(settings, [s3_target("minio", prefix=prefix)], default="minio",
                          retries=0)
    via_proxy = with_targets(
        settings, [s3_target("minio", endpoint=f"http://127.0.0.1:{port}", prefix=prefix)],
        default="minio", retries=6, retry_base_seconds=0.25)
    store = StorageTargets.from_settings(direct).default
    await store.prepare()
    await store.put("retry/a", _chunks(b"hello"))
    try:
        proxy.block()
        bare = StorageTargets.from_settings(via_proxy.model_copy(update={
            "storage": via_proxy.storage.model_copy(update={"retries": 0})})).default
        calls = (lambda: bare.stat("retry/a"), lambda: bare.delete("retry/a"),
                 lambda: _listing(bare))
        for call in calls:
            with pytest.raises(StorageError) as caught:
                await call()
            assert caught.value.transient, caught.value.message

        retrying = StorageTargets.from_settings(via_proxy).default
        asyncio.get_running_loop().call_later(1.5, proxy.unblock)
        info = await retrying.stat("retry/a")
        assert info is not None
        assert info.size == 5
        proxy.block()
        asyncio.get_running_loop().call_later(1.5, proxy.unblock)
        assert await _listing(retrying) == ["retry/a"]
    finally:
        await proxy.close()


async def _chunks(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


async def _listing(store: Storage) -> list[str]:
    return [info.key async for info in store.list_objects("retry/")]


def test_unknown_targets_are_refused(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="copy_targets nowhere"):
        Settings(_env_file=None,
                 sources=[pg_source("x", copy_targets=["nowhere"])])
    with pytest.raises(ValidationError, match="default_target"):
        with_targets(settings, [local_target("disk")], default="elsewhere")


async def test_backup_request_names_known_copy_targets(settings: Settings,
                                                       admin: Account) -> None:
    with pytest.raises(InvalidInputError, match="Unknown storage target"):
        await _backup(settings, admin, copy_targets=["nowhere"])


async def test_files_listing_takes_a_target(app: FastAPI, client: httpx.AsyncClient,
                                            viewer: Account) -> None:
    unknown = await client.get("/api/backups/files?target=nowhere", headers=viewer.headers)
    assert unknown.status_code == 422
    assert "nowhere" in unknown.json()["error"]["message"]
    default = await client.get("/api/backups/files?limit=1&target=local",
                               headers=viewer.headers)
    assert default.status_code == 200
    assert all(f["target"] == "local" for f in default.json())
    # A prefix never leaves the target's root (on SFTP "/etc/" once listed /etc).
    for prefix in ("/", "/etc/", "../", "a/../../"):
        outside = await client.get("/api/backups/files", params={"prefix": prefix},
                                   headers=viewer.headers)
        assert outside.status_code == 422, prefix
        assert outside.json()["error"]["details"][0]["field"] == "prefix"
