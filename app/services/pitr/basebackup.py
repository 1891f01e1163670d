"""Base backups: `pg_basebackup -Ft -D - -X none` streamed through the pipeline as one tar,
its start and stop LSN and timeline recorded; the WAL comes from the archive."""

import asyncio
import os
import time
from typing import Any

import structlog
from beanie import PydanticObjectId

from app.config import Settings, SourceSettings
from app.errors import InvalidInputError
from app.models.backup import Backup, BackupKind, BackupStatus, BackupType
from app.models.common import utcnow
from app.models.job import BackupJob, JobKind, JobTrigger
from app.models.job_params import PitrBaseBackupParams, params_of
from app.services.access.auth import system_user_id
from app.services.artifacts.stages import Chunks, Digest, from_bytes, rechunk
from app.services.catalog.queries import update_backup
from app.services.databases.backup import discard_backup, sealed, source_or_error
from app.services.databases.base import SourceError
from app.services.databases.manifest import format_chain, manifest_bytes
from app.services.databases.postgres.source import Connection, PgTools, pipe, whole_chunks
from app.services.jobs.runner import JobContext, JobRunner, Progress
from app.services.pitr.manifest import base_manifest
from app.services.pitr.tarwatch import TarWatch
from app.services.pitr.walnames import format_lsn, parse_lsn, segment_name
from app.services.pitr.window import BASE_FORMAT
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)


def pitr_source(settings: Settings, name: str) -> SourceSettings:
    """A configured, enabled PostgreSQL source (422 otherwise)."""
    source = source_or_error(settings, name)
    if source.kind != "postgres":
        raise InvalidInputError(f"Source {name!r} is a {source.kind.value} source; "
                                "point-in-time recovery is for PostgreSQL sources")
    return source


async def submit_base_backup(runner: JobRunner, source: str,
                             requested_by: PydanticObjectId | None,
                             trigger: JobTrigger = JobTrigger.api,
                             backup_type: BackupType = BackupType.manual) -> BackupJob:
    """Queue a `pitr_basebackup` job of one PostgreSQL source."""
    pitr_source(runner.settings, source)
    params = PitrBaseBackupParams(source=source, backup_type=backup_type)
    return await runner.submit(JobKind.pitr_basebackup, params, source=source,
                               trigger=trigger, requested_by=requested_by)


async def run_pitr_basebackup(ctx: JobContext) -> dict[str, Any]:
    """The `pitr_basebackup` job handler."""
    params = params_of(ctx.job, PitrBaseBackupParams)
    backup = await take_base_backup(
        ctx.settings, ctx.all_targets, ctx.progress, params.source,
        admin=ctx.job.requested_by or await system_user_id(), backup_type=params.backup_type,
        job_id=ctx.job.id, attach=ctx.attach_backup)
    return {"backupId": str(backup.id), "storedBytes": backup.stored_bytes,
            "sha256": backup.sha256, **backup.options.get("pitr", {})}


async def _basebackup_stream(source: SourceSettings, tools: PgTools,
                             stderr_out: list[str]) -> Chunks:
    conn = Connection.parse(source.uri.get_secret_value(), source.database_name())
    args = [tools.path("pg_basebackup"), "--format=tar", "--pgdata=-", "--wal-method=none",
            "--checkpoint=fast", "--verbose", "--no-password", f"--dbname={conn.uri}"]
    reader, write_fd = pipe()
    proc: asyncio.subprocess.Process | None = None
    try:
        with conn.child_env() as env:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *args, stdout=write_fd, stderr=asyncio.subprocess.PIPE,
                    stdin=asyncio.subprocess.DEVNULL, env=env)
            finally:
                os.close(write_fd)
            errors = asyncio.create_task(proc.stderr.read() if proc.stderr else _empty())
            async for chunk in whole_chunks(reader):
                yield chunk
            code = await proc.wait()
            text = (await errors).decode(errors="replace")
            stderr_out.append(text)
            if code != 0:
                raise SourceError(f"pg_basebackup exited with status {code}: "
                                  f"{text.strip()[-2000:] or 'no message'}")
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.to_thread(reader.close)


async def _empty() -> bytes:
    return b""


def _lsns(watch: TarWatch) -> dict[str, Any]:
    try:
        found = watch.wal_range()
    except ValueError as exc:
        raise SourceError(f"pg_basebackup's output is not as expected: {exc}") from exc
    start_lsn, end_lsn = parse_lsn(found["startLsn"]), parse_lsn(found["stopLsn"])
    return {"timeline": found["timeline"], "startLsn": format_lsn(start_lsn),
            "stopLsn": format_lsn(end_lsn), "startLsnBytes": start_lsn,
            "stopLsnBytes": end_lsn}


async def _switch_wal(source: SourceSettings) -> int:
    """End the current segment so the backup's last WAL is archived whole at once; returns
    the server's WAL segment size."""
    conn = await Connection.parse(source.uri.get_secret_value(),
                                  source.database_name()).connect()
    try:
        await conn.execute("SELECT pg_switch_wal()")
        return int(await conn.fetchval(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"))
    finally:
        await conn.close()


async def take_base_backup(settings: Settings, targets: StorageTargets, progress: Progress,
                           source_name: str, *, admin: PydanticObjectId | None,
                           backup_type: BackupType = BackupType.manual,
                           job_id: PydanticObjectId | None = None,
                           attach: Any = None) -> Backup:
    """One base backup to the default target; returns the completed Backup or raises."""
    source = pitr_source(settings, source_name)
    chain = [BASE_FORMAT, *format_chain(settings, BASE_FORMAT)[1:]]
    backup_id, created = PydanticObjectId(), utcnow()
    folder = f"{source.name}/{created:%Y/%m/%d}"
    backup = Backup(
        id=backup_id, created_at=created, admin=admin, type=backup_type, source=source.name,
        kind=BackupKind("postgres"), job_id=job_id, retention_days=settings.retention.days,
        notes="PITR base backup", storage_backend=targets.default.name,
        storage_target=targets.recorded_name(targets.default_name),
        storage_key=f"{folder}/{backup_id}.{'.'.join(chain)}",
        manifest_key=f"{folder}/{backup_id}.manifest.json", format_chain=chain,
        encrypted=settings.encryption.enabled,
        recipients=list(settings.encryption.recipients) if settings.encryption.enabled else [],
        database=source.database_name(), options={"pitrBase": True})
    await backup.insert()
    if attach is not None:
        await attach(backup.id)
    digest, started = Digest(), time.monotonic()
    stderr: list[str] = []
    tools = PgTools(settings.tools.pg_bin_dir)
    try:
        progress.set_phase("base backup")
        watch = TarWatch()
        stream = sealed(settings, watch.tap(rechunk(_basebackup_stream(source, tools, stderr))),
                        digest, progress)
        async with asyncio.timeout(settings.limits.timeout_seconds):
            stored = await targets.default.put(backup.storage_key or "", stream)
        lsns = _lsns(watch)
        segment_size = await _switch_wal(source)
        pitr = {**lsns, "startTime": created.isoformat(), "stopTime": utcnow().isoformat(),
                "startWal": segment_name(lsns["timeline"], lsns["startLsnBytes"] // segment_size),
                "stopWal": segment_name(lsns["timeline"], lsns["stopLsnBytes"] // segment_size)}
        details: dict[str, Any] = dict(
            size_mb=round(stored / 1024 / 1024, 6), sha256=digest.hexdigest,
            stored_bytes=stored, plaintext_bytes=progress.bytes_read,
            duration_ms=int((time.monotonic() - started) * 1000),
            tool_version=await tools.version("pg_basebackup"),
            options={"pitrBase": True, "pitr": pitr})
        for name, value in details.items():
            setattr(backup, name, value)
        backup.updated_at = utcnow()
        await targets.default.put(backup.manifest_key or "",
                                  from_bytes(manifest_bytes(base_manifest(backup, settings))))
        if not await update_backup(backup, only_if={"status": BackupStatus.pending.value},
                                   status=BackupStatus.completed, **details):
            raise SourceError("The base backup was given up as interrupted before it completed")
        log.info("base backup completed", backup_id=str(backup.id), source=source.name)
    except BaseException as exc:
        message = str(exc) or type(exc).__name__
        await asyncio.shield(discard_backup(targets, backup, message))
        raise
    return backup
