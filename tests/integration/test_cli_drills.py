"""`backvault drill run|list`, run as a user runs them (a real process on the catalog)."""

import asyncio
import json
import os
import sys
from pathlib import Path

from fastapi import FastAPI

from app.config import Settings
from app.models.common import utcnow
from app.models.drill import DrillResult, RestoreDrill
from app.models.job import BackupJob, JobKind
from tests.integration.test_cli_list import run_cli
from tests.support.settings import MONGO_URI, WORK


async def test_drill_list_shows_drills_and_trends(app: FastAPI, settings: Settings) -> None:
    drill = RestoreDrill(source="cli-drill", result=DrillResult.passed, rto_s=4.5,
                         started_at=utcnow(), finished_at=utcnow())
    await drill.insert()
    try:
        listed = json.loads(await run_cli(settings, "drill", "list", "--source", "cli-drill"))
        assert [d["id"] for d in listed["items"]] == [str(drill.id)]
        assert listed["trends"][0]["rtoS"] == [4.5]
    finally:
        await drill.delete()


async def test_drill_run_waits_for_its_job(app: FastAPI, settings: Settings) -> None:
    """Every source: none is configured in this process, so the job drills nothing, and
    says so; a drill job ran and finished (the job the API and schedules run too)."""
    before = await BackupJob.find({"kind": JobKind.restore_drill.value}).count()
    done = json.loads(await run_cli(settings, "drill", "run"))
    assert done == {"drills": []}
    jobs = await BackupJob.find({"kind": JobKind.restore_drill.value}).to_list()
    assert len(jobs) == before + 1
    assert jobs[-1].trigger.value == "cli"
    assert jobs[-1].status.value == "completed"


async def test_drill_run_of_an_unknown_source_is_a_clear_error(app: FastAPI,
                                                               settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({"BACKUP_CATALOG__MONGO_URI": MONGO_URI,
                "BACKUP_CATALOG__DATABASE": settings.catalog.database,
                "BACKUP_STORAGE__LOCAL_DIR": str(settings.storage.local_dir),
                "BACKUP_SYSTEM__LOG_LEVEL": "warning", "TERM": "dumb"})
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "backvault"), "drill", "run", "--source", "nope",
        env=env, cwd=WORK, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 2
    assert "Unknown source 'nope' for drills" in (out + err).decode()
