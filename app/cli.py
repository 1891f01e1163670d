"""The `backvault` command line. Work runs in this process against the same catalog and
storage as the service, with progress bars for long work."""

import asyncio
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

import typer
import uvicorn
from beanie import PydanticObjectId
from pydantic import SecretStr, ValidationError
from rich import box
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
from app.models.audit import AuditFilter, AuditOutcome
from app.models.backup import Backup, BackupFilter, BackupOut
from app.models.job import BackupJob, JobStatus, JobTrigger
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.models.user import PasswordReset, Role, User, UserCreate, UserUpdate
from app.runtime import open_runtime
from app.services.access import auth as auth_service
from app.services.access import users as user_service
from app.services.catalog import queries as catalog
from app.services.catalog.retention import CleanupRequest, CleanupResult, apply_retention
from app.services.databases.backup import submit_database_backup
from app.services.databases.restore import plan_restore
from app.services.jobs.runner import JobRunner
from app.services.jobs.runner import Progress as JobProgress
from app.services.jobs.submit import submit_cleanup, submit_restore, submit_verify
from app.services.ops import audit as audit_service

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


# What a backup's verification state reads as under the "verified" heading.
VERIFIED_WORDS = {"passed": "yes", "failed": "FAILED", "unverified": "no"}
# From this width the whole id fits and the type gets a column of its own.
WIDE = 110


def _size_text(size_mb: float | None) -> str:
    if size_mb is None:
        return "-"
    if size_mb >= 1024:
        return f"{size_mb / 1024:.1f} GB"
    return f"{size_mb:.1f} MB" if size_mb >= 1 else f"{size_mb * 1024:.0f} kB"


def _backups_table(items: list[BackupOut], width: int) -> Table:
    """Fits 80 columns: the id's last 8 characters (whole when wide), date to the minute,
    status and verification as whole words; only the source name may wrap."""
    wide = width >= WIDE
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("source", overflow="fold")
    if wide:
        table.add_column("type", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("verified", no_wrap=True)
    for b in items:
        source = (b.source or "-") + (" (safety)" if b.safety_for else "")
        row = [str(b.id) if wide else str(b.id)[-8:], f"{b.created_at:%Y-%m-%d %H:%M}",
               source, *([b.type.value] if wide else []), b.status.value,
               _size_text(b.size_mb),
               VERIFIED_WORDS.get(b.verification.state.value, b.verification.state.value)]
        table.add_row(*row)
    return table


@app.command("list")
def list_backups(source: str | None = None, status: str | None = None,
                 limit: int = 20) -> None:
    """The newest backups in the catalog."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        page = await catalog.list_backups(BackupFilter.model_validate(
            {"source": source, "status": status, "limit": limit}))
        out.print(_backups_table(page.items, out.width))
        shortened = " (ids: last 8 characters)" if out.width < WIDE and page.items else ""
        out.print(f"{page.total} backups{shortened}")
        return 0

    _run(work)


@app.command()
def files(target: Annotated[str | None, typer.Option(
              help="storage target (default: the default target)")] = None,
          prefix: str = "", limit: int = 1000) -> None:
    """Objects on one storage target, by key."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        storage = runner.targets.named(target)
        table = Table("key", "size", "modified")
        shown = 0
        async for info in storage.list_objects(prefix):
            table.add_row(info.key, str(info.size), str(info.modified or ""))
            shown += 1
            if shown >= limit:
                break
        out.print(table)
        out.print(f"{shown} objects on target {target or runner.targets.default_name}")
        return 0

    _run(work)


@app.command()
def targets() -> None:
    """The configured storage targets (the default marked) and where each is."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        for name, store in runner.targets.stores.items():
            mark = " (default)" if name == runner.targets.default_name else ""
            out.print(f"{name}{mark}: {store.name} {store.describe('KEY').removesuffix('KEY')}")
        return 0

    _run(work)


async def _backup_id(text: str) -> PydanticObjectId:
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


@app.command()
def verify(backup_id: str) -> None:
    """Re-read a backup and check its checksum and contents."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        backup = await catalog.get_backup(await _backup_id(backup_id))
        job = await submit_verify(runner, backup, None, trigger=JobTrigger.cli)
        return _report(await _run_job(runner, job, f"verify {backup_id}"))

    _run(work)


@app.command()
def restore(backup_id: str, target_database: str | None = None, drop_existing: bool = False,
            dry_run: bool = False, no_safety_backup: bool = False,
            confirm: Annotated[str | None, typer.Option(
                help="the target database's name: needed to restore over existing data")]
            = None) -> None:
    """Restore a backup (the database it holds unless --target-database)."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        request = RestoreRequest(target_database=target_database, drop_existing=drop_existing,
                                 dry_run=dry_run, safety_backup=not no_safety_backup,
                                 confirm=confirm)
        backup = await catalog.get_backup(await _backup_id(backup_id))
        plan = await plan_restore(settings, runner.targets, backup, request)
        if dry_run:
            out.print_json(plan.model_dump_json(by_alias=True))
            return 0
        job = await submit_restore(runner, backup, request, None, trigger=JobTrigger.cli)
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
            _print_cleanup(await apply_retention(settings, runner.targets, request))
            return 0
        job = await submit_cleanup(runner, request, None, trigger=JobTrigger.cli)
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
    configure_logging(settings.system.log_level)
    # log_config=None: uvicorn's lines go through our JSON handler, not its plain text ones.
    proxies = settings.system.trusted_proxies
    uvicorn.run("app.main:create_app", factory=True, host=host or settings.system.host,
                port=port or settings.system.port, reload=reload, log_level="warning",
                log_config=None, proxy_headers=proxies is not None,
                forwarded_allow_ips=proxies or "")


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


def _change_user(username: str, change: Callable[[User], Awaitable[str]]) -> None:
    """Find the user (any case), apply change, print what it says; no self/actor checks."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        out.print(await change(await user_service.get_user_by_name(username)))
        return 0

    _run(work)


@users.command("disable")
def user_disable(username: str) -> None:
    """Disable a user and revoke its tokens (not the last active superadmin)."""

    async def change(user: User) -> str:
        done = await user_service.update_user(user, UserUpdate(active=False), None)
        return f"disabled {done.username}"

    _change_user(username, change)


@users.command("enable")
def user_enable(username: str) -> None:
    """Enable a disabled user."""

    async def change(user: User) -> str:
        done = await user_service.update_user(user, UserUpdate(active=True), None)
        return f"enabled {done.username}"

    _change_user(username, change)


@users.command("set-role")
def user_set_role(username: str, role: Role) -> None:
    """Change a user's role (the last active superadmin keeps its role)."""

    async def change(user: User) -> str:
        done = await user_service.update_user(user, UserUpdate(role=role), None)
        return f"{done.username} is now {done.role.value}"

    _change_user(username, change)


@users.command("reset-password")
def user_reset_password(username: str) -> None:
    """Set a new password (read from the terminal or standard input); revokes its tokens."""
    password = PasswordReset(password=SecretStr(getpass.getpass("New password: "))).password

    async def change(user: User) -> str:
        done = await user_service.reset_password(user, password.get_secret_value())
        return f"password of {done.username} reset; its tokens are revoked"

    _change_user(username, change)


@users.command("revoke")
def user_revoke(username: str) -> None:
    """Revoke every token issued to a user so far."""

    async def change(user: User) -> str:
        done = await user_service.revoke_tokens(user)
        return f"tokens of {done.username} revoked"

    _change_user(username, change)


@users.command("delete")
def user_delete(username: str, yes: Annotated[bool, typer.Option(
        "--yes", help="do not ask for confirmation")] = False) -> None:
    """Delete a user (not the last active superadmin)."""
    if not yes:
        typer.confirm(f"Delete user {username}?", abort=True)

    async def change(user: User) -> str:
        await user_service.delete_user(user, None)
        return f"deleted {user.username}"

    _change_user(username, change)


audit_cli = typer.Typer(help="The audit log: check its hash chain, export, prune.",
                        no_args_is_help=True)
app.add_typer(audit_cli, name="audit")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit code 1 when a record was edited or deleted."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        report = await audit_service.verify_chain()
        if report.ok:
            out.print(f"audit log intact: {report.message}; newest record {report.last_seq} "
                      f"hash {report.last_hash}")
            return 0
        console.print(f"[red]audit log broken at record {report.broken_seq}:[/red] "
                      f"{report.message}")
        return 1

    _run(work)


@audit_cli.command("export")
def audit_export(
    export_format: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    output: Annotated[str | None, typer.Option(help="file to write (default: stdout)")] = None,
    user: Annotated[str | None, typer.Option(help="username or user id")] = None,
    action: Annotated[str | None, typer.Option(help="substring of the action")] = None,
    outcome: Annotated[AuditOutcome | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option("--from", help="UTC")] = None,
    until: Annotated[datetime | None, typer.Option("--to", help="UTC")] = None,
) -> None:
    """Write the audit records, oldest first, as JSON lines or CSV."""
    if export_format not in ("jsonl", "csv"):
        console.print("[red]error:[/red] --format must be jsonl or csv")
        raise typer.Exit(2)

    async def work(settings: Settings, runner: JobRunner) -> int:
        query = audit_service.audit_query(AuditFilter.model_validate(
            {"user": user, "action": action, "outcome": outcome, "from": since, "to": until}))
        with open(output, "wb") if output else open(sys.stdout.fileno(), "wb",
                                                    closefd=False) as sink:
            async for chunk in audit_service.export_records(query, export_format):
                sink.write(chunk)
        return 0

    _run(work)


@audit_cli.command("prune")
def audit_prune() -> None:
    """Delete audit records older than audit.retention_days (the chain stays verifiable)."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        out.print(f"{await audit_service.prune_audit(settings)} audit records pruned")
        return 0

    _run(work)


def main() -> None:
    app()

