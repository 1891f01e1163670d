"""Failures leave no completed record and nothing under an artifact's final name."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pyrage
import pytest
from beanie import PydanticObjectId, SortDirection

from app.config import Settings
from app.errors import AppError
from app.models.backup import Backup, BackupStatus, VerificationState
from app.models.job import BackupJob, JobStatus
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.services.databases.backup import back_up
from app.services.databases.restore import restore
from app.services.databases.verify import verify
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.recovery import sweep
from app.services.jobs.runner import JobRunner, Progress
from app.services.storage import LocalStorage
from app.services.storage.base import StorageError
from app.services.storage.s3 import S3Storage
from tests.support.accounts import Account
from tests.support.big_source import with_changes
from tests.support.proxy import CuttingProxy
from tests.support.settings import (
    MONGO_URI,
    PG_URI,
    RUN,
    S3_ACCESS,
    S3_ENDPOINT,
    S3_SECRET,
    WORK,
    pg_uri,
)

pytestmark = pytest.mark.usefixtures("source_databases")


def store(settings: Settings) -> LocalStorage:
    return LocalStorage(settings.storage.local_dir)


def leftovers(root: Path, backup: Backup) -> list[Path]:
    assert backup.storage_key is not None
    folder = (root / backup.storage_key).parent
    return sorted(folder.glob(f"{backup.id}*")) if folder.exists() else []


async def latest_backup(source: str) -> Backup:
    newest = [("createdAt", SortDirection.DESCENDING)]
    found = await Backup.find({"source": source}).sort(newest).limit(1).to_list()
    assert found
    return found[0]


async def good_backup(settings: Settings, admin: Account) -> Backup:
    return await back_up(settings, store(settings), Progress(),
                         DatabaseBackupCreate(source="pg", tables=["authors"]),
                         admin=admin.user.id)


async def test_flipped_bit_fails_verify(settings: Settings, admin: Account) -> None:
    backup = await good_backup(settings, admin)
    path = store(settings).root / str(backup.storage_key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    result = await verify(settings, store(settings), backup.id, Progress())  # type: ignore[arg-type]
    assert result.state is VerificationState.failed
    assert result.sha256_ok is False
    assert result.size_ok is True
    assert result.error is not None
    assert result.error.startswith("SHA-256 of the stored object differs")
    assert "encrypted data is damaged" in result.error
    stored = await Backup.get(backup.id)
    assert stored is not None
    assert stored.verification.state is VerificationState.failed


async def test_truncated_object_fails_verify(settings: Settings, admin: Account) -> None:
    backup = await good_backup(settings, admin)
    path = store(settings).root / str(backup.storage_key)
    path.write_bytes(path.read_bytes()[:-500])
    result = await verify(settings, store(settings), backup.id, Progress())  # type: ignore[arg-type]
    assert result.state is VerificationState.failed
    assert result.size_ok is False
    assert result.sha256_ok is False
    assert "differs from the recorded" in str(result.error)


async def test_wrong_identity_is_a_clear_error(settings: Settings, admin: Account) -> None:
    backup = await good_backup(settings, admin)
    other_key = WORK / "other-key.txt"
    other_key.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    wrong = with_changes(settings, encryption={"identity_file": other_key})
    # A key that does not fit is a configuration error, never a verdict on the backup.
    with pytest.raises(AppError, match="identity does not match a recipient"):
        await verify(wrong, store(wrong), backup.id, Progress())  # type: ignore[arg-type]
    stored = await Backup.get(backup.id)
    assert stored is not None
    assert stored.verification.state is not VerificationState.failed
    with pytest.raises(AppError, match="identity does not match a recipient"):
        await restore(wrong, store(wrong), backup.id,  # type: ignore[arg-type]
                      RestoreRequest(target_database=f"bv_never_{RUN}"), Progress(), None)


async def test_source_dying_mid_dump(settings: Settings, admin: Account, big: str) -> None:
    slow = with_changes(settings, limits={"bandwidth_mbps": 2.0})
    progress = Progress()
    task = asyncio.create_task(back_up(slow, store(slow), progress,
                                       DatabaseBackupCreate(source="big"), admin=admin.user.id))
    # While pg_dump is in the middle of copying rows: killed any later, when the pipeline
    # has taken in the rest of the dump, pg_dump would have nothing left to fail on.
    conn = await asyncpg.connect(PG_URI)
    try:
        killed = 0
        for _ in range(1000):
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND application_name = 'pg_dump' AND state = 'active' "
                "AND query LIKE 'COPY%'", big)
            if killed or task.done():
                break
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    assert killed == 1
    with pytest.raises(AppError, match="pg_dump exited with status 1"):
        await task
    backup = await latest_backup("big")
    assert backup.status is BackupStatus.failed
    assert "pg_dump" in str(backup.error)
    assert leftovers(store(slow).root, backup) == []


async def test_size_limit_fails_and_cleans_up(settings: Settings, admin: Account,
                                              big: str) -> None:
    small = with_changes(settings, limits={"max_size_mb": 1})
    with pytest.raises(AppError, match="exceeds the size limit of 1 MB"):
        await back_up(small, store(small), Progress(), DatabaseBackupCreate(source="big"),
                      admin=admin.user.id)
    backup = await latest_backup("big")
    assert backup.status is BackupStatus.failed
    assert leftovers(store(small).root, backup) == []


async def test_timeout_fails_and_cleans_up(settings: Settings, admin: Account,
                                           big: str) -> None:
    slow = with_changes(settings, limits={"timeout_seconds": 1, "bandwidth_mbps": 1.0})
    with pytest.raises(AppError, match="timed out after 1 seconds"):
        await back_up(slow, store(slow), Progress(), DatabaseBackupCreate(source="big"),
                      admin=admin.user.id)
    backup = await latest_backup("big")
    assert backup.status is BackupStatus.failed
    assert backup.error == "Backup timed out after 1 seconds"
    assert leftovers(store(slow).root, backup) == []


async def test_s3_endpoint_going_away_mid_backup(settings: Settings, admin: Account,
                                                 big: str) -> None:
    direct = S3Storage("backvault-test", prefix=f"faults-{RUN}", endpoint_url=S3_ENDPOINT,
                       access_key=S3_ACCESS, secret_key=S3_SECRET)
    await direct.ensure_bucket()
    proxy = CuttingProxy(urlsplit(S3_ENDPOINT).port or 80, cut_after_bytes=10 * 1024 * 1024)
    port = await proxy.start()
    via_proxy = S3Storage("backvault-test", prefix=f"faults-{RUN}",
                          endpoint_url=f"http://127.0.0.1:{port}", access_key=S3_ACCESS,
                          secret_key=S3_SECRET)
    plain = with_changes(settings, encryption={"recipients": []})
    try:
        with pytest.raises(StorageError):
            await back_up(plain, via_proxy, Progress(), DatabaseBackupCreate(source="big"),
                          admin=admin.user.id)
    finally:
        await proxy.close()
    backup = await latest_backup("big")
    assert backup.status is BackupStatus.failed
    assert await direct.stat(str(backup.storage_key)) is None
    assert await direct.stat(str(backup.manifest_key)) is None
    await direct.discard_stale_partials(older_than_seconds=0)
    assert await direct.pending_uploads() == []


async def test_process_killed_mid_backup(settings: Settings, big: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({
        "BACKUP_CATALOG__MONGO_URI": MONGO_URI,
        "BACKUP_CATALOG__DATABASE": settings.catalog.database,
        "BACKUP_SOURCES": f'[{{"name": "big", "kind": "postgres", "uri": "{pg_uri(big)}"}}]',
        "BACKUP_STORAGE__LOCAL_DIR": str(settings.storage.local_dir),
        "BACKUP_TOOLS__PG_BIN_DIR": str(settings.tools.pg_bin_dir),
        "BACKUP_LIMITS__BANDWIDTH_MBPS": "2",
        "BACKUP_SYSTEM__LEASE_SECONDS": "2",
        "BACKUP_LIMITS__JOB_ATTEMPTS": "1",  # this one is not retried
    })
    cli = Path(sys.executable).parent / "backvault"
    proc = subprocess.Popen([str(cli), "backup", "create", "--source", "big"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=WORK)
    try:
        backup_id: PydanticObjectId | None = None
        for _ in range(300):
            found = await Backup.find({"source": "big", "status": "pending"}).to_list()
            partial = [p for b in found for p in leftovers(Path(settings.storage.local_dir), b)]
            if partial and partial[0].stat().st_size > 512 * 1024:
                backup_id = found[0].id
                break
            await asyncio.sleep(0.05)
        assert backup_id is not None, "the backup never started writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    backup = await Backup.get(backup_id)
    assert backup is not None
    assert backup.status is BackupStatus.pending  # never completed
    root = Path(settings.storage.local_dir)
    assert not (root / str(backup.storage_key)).exists()
    assert not (root / str(backup.manifest_key)).exists()
    assert leftovers(root, backup)
    assert all(".partial-" in p.name for p in leftovers(root, backup))

    # Once the lease lapses, a sweep (any replica's) gives the work up and cleans after it.
    await asyncio.sleep(2.5)
    runner = JobRunner(with_changes(settings), store(settings), JOB_HANDLERS, replica_id="sweeper")
    await sweep(runner)
    job = await BackupJob.get(backup.job_id)
    assert job is not None
    assert job.status is JobStatus.interrupted
    assert job.error is not None
    assert job.error.startswith("Interrupted: replica ")
    assert job.retry_job_id is None  # one attempt allowed
    swept = await Backup.get(backup_id)
    assert swept is not None
    assert swept.status is BackupStatus.failed
    assert swept.error == "Interrupted: its job ended interrupted"
    assert leftovers(root, backup) == []
