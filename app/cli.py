"""The `backvault` command line. Work runs in this process against the same catalog and
storage as the service, with progress bars for long work."""

import asyncio
import getpass
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
import uvicorn
from beanie import PydanticObjectId
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from app.config import Settings, get_settings
from app.errors import AppError
from app.logs import configure_logging
from app.models.backup import BackupFilter
from app.models.job import BackupJob, JobKind, JobStatus, JobTrigger
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.models.user import Role, UserCreate
from app.services import auth as auth_service
from app.services import catalog
from app.services.backups import submit_database_backup
from app.services.catalog_db import open_catalog
from app.services.handlers import JOB_HANDLERS
from app.services.jobs import JobRunner
from app.services.jobs import Progress as JobProgress
from app.services.notify import job_listener
from app.services.restores import plan_restore
from app.services.retention import CleanupRequest, CleanupResult, apply_retention
from app.services.storage import storage_from_settings

app = typer.Typer(help="Backvault: backups of PostgreSQL, MongoDB, IPFS and Gaia.",
                  no_args_is_help=True)
users = typer.Typer(help="Manage API users.", no_args_is_help=True)
backup_app = typer.Typer(help="Create backups.", no_args_is_help=True)
app.add_typer(users, name="user")
app.add_typer(backup_app, name="backup")
console = Console(stderr=True)
out = Console()


def _run(work: Callable[[Settings, JobRunner], Awaitable[int]]) -> None:
    """Open catalog and storage, run work, exit with its code; errors are one clear line."""

    async def main() -> int:
        settings = get_settings()
        configure_logging(settings.system.log_level)
        client = await open_catalog(settings)
        storage = storage_from_settings(settings)
        await storage.prepare()
        runner = JobRunner(settings, storage, JOB_HANDLERS, runs_own_jobs=True)
        runner.finish_listeners.append(job_listener(settings))
        try:
            return await work(settings, runner)
        finally:
            await client.close()

    try:
        code = asyncio.run(main())
    except AppError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    except ValidationError as exc:
        console.print(f"[red]invalid input:[/red] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


async def _run_job(runner: JobRunner, job: BackupJob, title: str) -> BackupJob:
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


def _report(job: BackupJob) -> int:
    if job.status is JobStatus.completed:
        out.print_json(json.dumps(job.result, default=str))
        return 0
    console.print(f"[red]{job.kind.value} {job.status.value}:[/red] {job.error}")
    return 1


@backup_app.command("create")
def backup_create(
    source: Annotated[str, typer.Option(help="configured source name")],
    table: Annotated[list[str] | None, typer.Option(help="PostgreSQL table (repeat)")] = None,
    collection: Annotated[list[str] | None, typer.Option(help="MongoDB collection")] = None,
    schema_only: bool = False, data_only: bool = False, allow_partial: bool = False,
    notes: str | None = None, retention_days: int | None = None,
) -> None:
    """Back up one source now and wait for it."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        body = DatabaseBackupCreate(source=source, tables=table or [],
                                    collections=collection or [], schema_only=schema_only,
                                    data_only=data_only, allow_partial=allow_partial,
                                    notes=notes, retention_days=retention_days)
        job = await submit_database_backup(runner, body, None, trigger=JobTrigger.cli)
        return _report(await _run_job(runner, job, f"backup {source}"))

    _run(work)


@app.command("list")
def list_backups(source: str | None = None, status: str | None = None,
                 limit: int = 20) -> None:
    """The newest backups in the catalog."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        page = await catalog.list_backups(BackupFilter.model_validate(
            {"source": source, "status": status, "limit": limit}))
        table = Table("id", "created", "source", "type", "status", "size MB", "verified")
        table.columns[0].no_wrap = True
        for b in page.items:
            table.add_row(str(b.id), f"{b.created_at:%Y-%m-%d %H:%M:%S}", b.source or "-",
                          b.type.value, b.status.value,
                          f"{b.size_mb:.2f}" if b.size_mb is not None else "-",
                          b.verification.state.value)
        out.print(table)
        out.print(f"{page.total} backups")
        return 0

    _run(work)


@app.command()
def verify(backup_id: str) -> None:
    """Re-read a backup and check its checksum and contents."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        backup = await catalog.get_backup(PydanticObjectId(backup_id))
        job = await runner.submit(JobKind.verify, {}, source=backup.source,
                                  backup_id=backup.id, trigger=JobTrigger.cli)
        return _report(await _run_job(runner, job, f"verify {backup_id}"))

    _run(work)


@app.command()
def restore(backup_id: str, target_database: str | None = None, drop_existing: bool = False,
            dry_run: bool = False, no_safety_backup: bool = False) -> None:
    """Restore a backup (its source's database unless --target-database)."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        request = RestoreRequest(target_database=target_database, drop_existing=drop_existing,
                                 dry_run=dry_run, safety_backup=not no_safety_backup)
        backup = await catalog.get_backup(PydanticObjectId(backup_id))
        plan = await plan_restore(settings, runner.storage, backup, request)
        if dry_run:
            out.print_json(plan.model_dump_json(by_alias=True))
            return 0
        job = await runner.submit(JobKind.restore, request.model_dump(mode="json"),
                                  source=backup.source, backup_id=backup.id,
                                  trigger=JobTrigger.cli)
        return _report(await _run_job(runner, job, f"restore {backup_id}"))

    _run(work)


def _print_cleanup(result: CleanupResult) -> None:
    verb = "would delete" if result.dry_run else "deleted"
    table = Table("id", "source", "created", "status", "reasons", title=f"{verb}")
    for item in result.deleted:
        table.add_row(str(item.id), item.source or "-", f"{item.created_at:%Y-%m-%d %H:%M}",
                      item.status.value, "; ".join(item.reasons))
    out.print(table)
    for item in result.protected:
        out.print(f"kept {item.id} ({item.source}): {'; '.join(item.reasons)}")
    out.print(f"{result.deleted_count} backups {verb}, {result.freed_bytes} bytes")


@app.command()
def cleanup(dry_run: Annotated[bool, typer.Option(help="show what would go; delete nothing")]
            = False, source: str | None = None) -> None:
    """Apply retention: delete expired backups, never below the per-source minimum."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        request = CleanupRequest(dry_run=dry_run, source=source)
        if dry_run:
            _print_cleanup(await apply_retention(settings, runner.storage, request))
            return 0
        job = await runner.submit(JobKind.cleanup, request.model_dump(mode="json", by_alias=True),
                                  source=source, trigger=JobTrigger.cli)
        finished = await _run_job(runner, job, "retention cleanup")
        if finished.status is not JobStatus.completed:
            return _report(finished)
        _print_cleanup(CleanupResult.model_validate(finished.result))
        return 0

    _run(work)


@app.command()
def serve(host: str | None = None, port: int | None = None, reload: bool = False) -> None:
    """Run the API server."""
    settings = get_settings()
    uvicorn.run("app.main:create_app", factory=True, host=host or settings.system.host,
                port=port or settings.system.port, reload=reload, log_level="warning")


@users.command("create")
def user_create(username: str, role: Role = Role.viewer, email: str | None = None,
                name: str | None = None) -> None:
    """Create a user; the password is read from the terminal or standard input."""
    password = getpass.getpass("Password: ")

    async def work(settings: Settings, runner: JobRunner) -> int:
        user = await auth_service.create_user(UserCreate(
            username=username, password=SecretStr(password), email=email, name=name,
            role=role))
        out.print(f"created {user.username} ({user.role.value})")
        return 0

    _run(work)


def main() -> None:
    app()

