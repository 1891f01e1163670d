"""`backvault list` fits an 80-column terminal with whole words (finding 11); CLI jobs are
queued like the API's."""

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI

from app.config import Settings
from app.models.backup import Backup, BackupStatus, Verification, VerificationState
from app.models.job import BackupJob, JobKind, JobStatus, JobTrigger
from tests.support.settings import MONGO_URI, RUN, WORK

SOURCE = f"orders-archive-{RUN}"  # 23 characters: longer than the source column at 80
ROWS = [
    (BackupStatus.completed, VerificationState.passed, 12.5),
    (BackupStatus.failed, VerificationState.failed, None),
    (BackupStatus.pending, VerificationState.unverified, 0.2),
    (BackupStatus.restored, VerificationState.unverified, 2048.0),
]


@pytest.fixture(scope="module")
async def listed(app: FastAPI) -> AsyncIterator[list[Backup]]:
    backups = [await Backup(admin=PydanticObjectId(), source=SOURCE, status=status,
                            size_mb=size, verification=Verification(state=state)).insert()
               for status, state, size in ROWS]
    yield backups
    await Backup.find({"source": SOURCE}).delete()


async def run_cli(settings: Settings, *args: str, columns: int = 80) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({
        "BACKUP_CATALOG__MONGO_URI": MONGO_URI,
        "BACKUP_CATALOG__DATABASE": settings.catalog.database,
        "BACKUP_STORAGE__LOCAL_DIR": str(settings.storage.local_dir),
        "BACKUP_SYSTEM__LOG_LEVEL": "warning",
        "COLUMNS": str(columns),
        "TERM": "dumb",
    })
    cli = Path(sys.executable).parent / "backvault"
    proc = await asyncio.create_subprocess_exec(
        str(cli), *args, env=env, cwd=WORK,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def run_list(settings: Settings, columns: int) -> str:
    return await run_cli(settings, "list", "--source", SOURCE, columns=columns)


async def test_list_fits_80_columns(settings: Settings, listed: list[Backup]) -> None:
    text = await run_list(settings, 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text
    words = text.split()
    for backup in listed:
        at = next(i for i, line in enumerate(lines) if str(backup.id)[-8:] in line)
        row = lines[at]
        assert f"{backup.created_at:%Y-%m-%d %H:%M}" in row
        assert backup.status.value in row.split(), row
        # A long source name wraps inside its column (onto the next line), never cut.
        column = row.index("orders-archive-")
        assert row[column:].split()[0] + lines[at + 1][column:].split()[0] == SOURCE
    for word in ("completed", "failed", "pending", "restored", "yes", "FAILED", "no"):
        assert word in words, text
    for size in ("12.5 MB", "205 kB", "2.0 GB"):
        assert size in text
    assert "4 backups" in text


async def test_list_wide_shows_whole_ids(settings: Settings, listed: list[Backup]) -> None:
    text = await run_list(settings, 140)
    assert max(len(line) for line in text.splitlines()) <= 140
    for backup in listed:
        row = next(line for line in text.splitlines() if str(backup.id) in line)
        assert SOURCE in row
        assert "manual" in row
        assert backup.status.value in row.split()


async def test_cli_cleanup_queues_a_typed_job_and_runs_it(settings: Settings,
                                                          listed: list[Backup]) -> None:
    source = f"nothing-here-{RUN}"
    text = await run_cli(settings, "cleanup", "--source", source, columns=140)
    assert "0 backups deleted" in text
    job = await BackupJob.find_one({"kind": JobKind.cleanup.value, "source": source})
    assert job is not None
    assert job.trigger is JobTrigger.cli
    assert job.status is JobStatus.completed
    # Stored in the same camelCase shape the API's and a schedule's cleanups have.
    assert job.params == {"dryRun": False, "source": source}
