"""CLI commands for backups: create, list, files, targets, verify, restore, cleanup, serve."""

from typing import Annotated

import typer
import uvicorn
from rich import box
from rich.table import Table

from app.cli.common import app, backup_app, backup_id_from, out, report_job, run_job_here, run_work
from app.config import Settings, get_settings
from app.logs import configure_logging
from app.models.backup import BackupFilter, BackupOut
from app.models.job import JobStatus, JobTrigger
from app.models.requests import CleanupRequest, DatabaseBackupCreate, RestoreRequest
from app.services.catalog import queries as catalog
from app.services.catalog.retention import CleanupResult, apply_retention
from app.services.databases.backup import submit_database_backup
from app.services.databases.restore import plan_restore
from app.services.jobs.runner import JobRunner
from app.services.jobs.submit import submit_cleanup, submit_restore, submit_verify


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
        return report_job(await run_job_here(runner, job, f"backup {source}"))

    run_work(work)


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

    run_work(work)


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

    run_work(work)


@app.command()
def targets() -> None:
    """The configured storage targets (the default marked) and where each is."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        for name, store in runner.targets.stores.items():
            mark = " (default)" if name == runner.targets.default_name else ""
            out.print(f"{name}{mark}: {store.name} {store.describe('KEY').removesuffix('KEY')}")
        return 0

    run_work(work)


@app.command()
def verify(backup_id: str) -> None:
    """Re-read a backup and check its checksum and contents."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        backup = await catalog.get_backup(await backup_id_from(backup_id))
        job = await submit_verify(runner, backup, None, trigger=JobTrigger.cli)
        return report_job(await run_job_here(runner, job, f"verify {backup_id}"))

    run_work(work)


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
        backup = await catalog.get_backup(await backup_id_from(backup_id))
        plan = await plan_restore(settings, runner.targets, backup, request)
        if dry_run:
            out.print_json(plan.model_dump_json(by_alias=True))
            return 0
        job = await submit_restore(runner, backup, request, None, trigger=JobTrigger.cli)
        return report_job(await run_job_here(runner, job, f"restore {backup_id}"))

    run_work(work)


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
    for wal in result.wal:
        gone = f" ({wal.first} to {wal.last})" if wal.segments else ""
        out.print(f"WAL of {wal.source}: {wal.segments} segment(s) "
                  f"{'would be deleted' if result.dry_run else 'deleted'}{gone}, "
                  f"{wal.stored_bytes} bytes; kept from {wal.kept_from}")


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
        finished = await run_job_here(runner, job, "retention cleanup")
        if finished.status is not JobStatus.completed:
            return report_job(finished)
        _print_cleanup(CleanupResult.model_validate(finished.result))
        return 0

    run_work(work)


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


