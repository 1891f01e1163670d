"""The CLI's shared parts: the command groups, output, running work and jobs here."""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import typer
from beanie import PydanticObjectId
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from app.config import Settings, get_settings
from app.errors import AppError
from app.models.backup import Backup
from app.models.job import BackupJob, JobStatus
from app.runtime import open_runtime
from app.services.jobs.runner import JobRunner
from app.services.jobs.runner import Progress as JobProgress

app = typer.Typer(help="Backvault: backups of PostgreSQL, MongoDB, IPFS and Gaia.",
                  no_args_is_help=True)
users = typer.Typer(help="Manage API users.", no_args_is_help=True)
backup_app = typer.Typer(help="Create backups.", no_args_is_help=True)
app.add_typer(users, name="user")
app.add_typer(backup_app, name="backup")
console = Console(stderr=True)
out = Console()


def run_work(work: Callable[[Settings, JobRunner], Awaitable[int]]) -> None:
    """Open catalog and storage, run work, exit with its code; errors are one clear line."""

    async def main() -> int:
        settings = get_settings()
        async with open_runtime(settings, runs_own_jobs=True) as runtime:
            return await work(settings, runtime.runner)

    try:
        code = asyncio.run(main())
    except AppError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    except ValidationError as exc:
        console.print(f"[red]invalid input:[/red] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


async def run_job_here(runner: JobRunner, job: BackupJob, title: str) -> BackupJob:
    """Run a queued job here, with a progress bar of bytes read and the rate."""
    assert job.id is not None
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TextColumn("{task.fields[phase]}"),
                  TimeElapsedColumn(), console=console, transient=False,
                  refresh_per_second=4) as bars:
        task = bars.add_task(title, total=None, phase="queued")
        shown: dict[str, float | str] = {"at": 0.0, "phase": ""}

        def show(progress: JobProgress) -> None:
            # Called for every chunk: redraw a few times a second, not hundreds.
            now = time.monotonic()
            if now - float(shown["at"]) < 0.2 and progress.phase == shown["phase"]:
                return
            shown["at"], shown["phase"] = now, progress.phase
            bars.update(task, completed=progress.bytes_read, phase=progress.phase)

        async def watch() -> None:
            # Attach the bar to the job's live counters once the job has started.
            while True:
                live = runner.progress.get(job.id)  # type: ignore[arg-type]
                if live is not None and show not in live.listeners:
                    live.listeners.append(show)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            finished = await runner.run_now(job)
        finally:
            watcher.cancel()
        bars.update(task, phase=finished.status.value)
    return finished


def report_job(job: BackupJob) -> int:
    if job.status is JobStatus.completed:
        out.print_json(json.dumps(job.result, default=str))
        return 0
    console.print(f"[red]{job.kind.value} {job.status.value}:[/red] {job.error}")
    return 1


async def backup_id_from(text: str) -> PydanticObjectId:
    """A whole backup id, or the unique backup whose id ends with `text` (as `list` shows)."""
    if PydanticObjectId.is_valid(text):
        return PydanticObjectId(text)
    if not 4 <= len(text) < 24 or not all(c in "0123456789abcdef" for c in text.lower()):
        raise AppError(f"{text!r} is not a backup id or the end of one")
    ids = [doc["_id"] async for doc in Backup.get_pymongo_collection().find({}, {"_id": 1})
           if str(doc["_id"]).endswith(text.lower())]
    if len(ids) != 1:
        raise AppError(f"{len(ids) or 'No'} backups have an id ending in {text!r}"
                       + ("; give more of it" if ids else ""))
    return PydanticObjectId(ids[0])


