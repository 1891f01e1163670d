"""PITR commands: `wal-fetch` (a PostgreSQL restore_command), `pitr window`,
`pitr basebackup`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import app, console, out, report_job, run_job_here, run_work
from app.config import Settings
from app.errors import NotFoundError
from app.models.job import JobTrigger
from app.services.jobs.runner import JobRunner
from app.services.pitr.basebackup import pitr_source, submit_base_backup
from app.services.pitr.ship import fetch_to
from app.services.pitr.window import source_window

pitr_app = typer.Typer(help="Point-in-time recovery of PostgreSQL sources.",
                       no_args_is_help=True)
app.add_typer(pitr_app, name="pitr")


@app.command("wal-fetch")
def wal_fetch(source: str, wal_file: Annotated[str, typer.Argument(help="%f")],
              dest: Annotated[Path, typer.Argument(help="%p")]) -> None:
    """Write one archived WAL file to dest, its SHA-256 checked, decrypted and decompressed
    (restore_command = 'backvault wal-fetch SOURCE %f %p'); exit 1 when it is not archived."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        try:
            await fetch_to(settings, runner.targets, source, wal_file, dest)
        except NotFoundError as exc:
            console.print(f"wal-fetch: {exc.message}")
            return 1
        return 0

    run_work(work)


@pitr_app.command("window")
def window(source: str) -> None:
    """The recoverable window of one source: earliest, latest, gaps, base backups."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        pitr_source(settings, source)
        found = await source_window(settings, source)
        out.print_json(json.dumps(found.model_dump(mode="json", by_alias=True)))
        return 0 if not found.gaps else 3

    run_work(work)


@pitr_app.command("basebackup")
def basebackup(source: str) -> None:
    """Take a base backup of one source now and wait for it."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        job = await submit_base_backup(runner, source, None, trigger=JobTrigger.cli)
        return report_job(await run_job_here(runner, job, f"base backup of {source}"))

    run_work(work)
