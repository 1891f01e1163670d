"""Restore a backup: plan (dry run), pre-restore safety backup, restore, count check."""

import asyncio
import tempfile
from contextlib import aclosing
from pathlib import Path
from typing import Any

import structlog
from beanie import PydanticObjectId
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.config import Settings, SourceKind, SourceSettings
from app.errors import ConflictError
from app.models.backup import Backup, BackupKind, BackupStatus
from app.models.common import ApiSchema, utcnow
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.services.artifact_read import plaintext, require_artifact
from app.services.auth import system_user_id
from app.services.backups import back_up, source_or_error
from app.services.catalog import get_backup, update_backup
from app.services.jobs import JobContext, Progress
from app.services.pipeline.stages import Chunks, Digest, counted
from app.services.sources.base import SourceError
from app.services.sources.mongodb import restore_archive
from app.services.sources.postgres import PgTools, PostgresSource
from app.services.storage import Storage

log = structlog.get_logger(__name__)
SAFETY_RETENTION_DAYS = 7


class PlanItem(ApiSchema):
    name: str
    count: int | None
    bytes: int | None
    action: str  # create | replace | conflict
    existing_count: int | None = None


class RestorePlan(ApiSchema):
    backup_id: PydanticObjectId
    source: str
    kind: str
    target_database: str
    target_exists: bool
    drop_existing: bool
    items: list[PlanItem]
    conflicts: list[str]
    extra_in_target: list[str]
    backup_server_version: str | None
    target_server_version: str | None
    compatible: bool
    warnings: list[str]
    safety_backup: bool
    artifact_ok: bool

    def refuse_conflicts(self) -> None:
        if self.conflicts:
            raise ConflictError(f"Target {self.target_database} already holds "
                                f"{', '.join(self.conflicts)}; set dropExisting to replace them",
                                {"conflicts": self.conflicts})


def _major(version: str | None) -> int | None:
    try:
        return int((version or "").split(".")[0].split()[0])
    except (ValueError, IndexError):
        return None


async def _target_state(source: SourceSettings, settings: Settings,
                        database: str) -> tuple[bool, str | None, dict[str, int]]:
    """Whether the target exists, its server version and the counts of what it holds."""
    if source.kind is SourceKind.postgres:
        pg = PostgresSource(source.uri.get_secret_value(), source.database,
                            PgTools(settings.tools.pg_bin_dir))
        if not await pg.database_exists(database):
            return False, await pg.server_version(), {}
        described = await pg.describe(database)
        return True, described["server_version"], described["counts"]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        source.uri.get_secret_value(), serverSelectionTimeoutMS=10_000)
    try:
        version = str((await client.admin.command("buildInfo")).get("version"))
        names = [n for n in await client[database].list_collection_names()
                 if not n.startswith("system.")]
        counts = {n: await client[database][n].count_documents({}) for n in names}
        return bool(names), version, counts
    except PyMongoError as exc:
        raise SourceError(f"Cannot inspect {database}: {exc}") from exc
    finally:
        await client.close()


async def plan_restore(settings: Settings, storage: Storage, backup: Backup,
                       request: RestoreRequest) -> RestorePlan:
    """What a restore would do, touching nothing."""
    key = require_artifact(backup)
    if backup.kind is BackupKind.content:
        raise ConflictError("A content backup is restored into IPFS with POST "
                            f"/api/backups/{backup.id}/import, or exported with "
                            "export.car (IPFS) and export.tar (Gaia)")
    source = source_or_error(settings, backup.source or "")
    target = request.target_database or source.database_name()
    exists, target_version, counts = await _target_state(source, settings, target)
    items, conflicts = [], []
    for entry in backup.contents:
        existing = counts.get(entry.name)
        if existing is None:
            action = "create"
        elif request.drop_existing:
            action = "replace"
        elif existing == 0 and source.kind is SourceKind.mongodb:
            action = "create"
        else:
            action = "conflict"
            conflicts.append(entry.name)
        items.append(PlanItem(name=entry.name, count=entry.count, bytes=entry.bytes,
                              action=action, existing_count=existing))
    warnings = []
    backup_major, target_major = _major(backup.server_version), _major(target_version)
    compatible = True
    if source.kind is SourceKind.postgres and backup_major and target_major \
            and target_major < backup_major:
        compatible = False
        warnings.append(f"the backup comes from PostgreSQL {backup_major}; the target runs "
                        f"{target_major}, and pg_restore into an older server may fail")
    info = await storage.stat(key)
    artifact_ok = info is not None and info.size == backup.stored_bytes
    if not artifact_ok:
        warnings.append("the stored object is missing or its size differs from the catalog")
    if backup.encrypted and settings.encryption.identity_file is None:
        warnings.append("the backup is encrypted and no identity file is configured")
    return RestorePlan(
        backup_id=backup.id, source=source.name, kind=source.kind.value,  # type: ignore[arg-type]
        target_database=target, target_exists=exists, drop_existing=request.drop_existing,
        items=items, conflicts=conflicts,
        extra_in_target=sorted(set(counts) - {e.name for e in backup.contents}),
        backup_server_version=backup.server_version, target_server_version=target_version,
        compatible=compatible, warnings=warnings,
        safety_backup=request.safety_backup and exists and any(counts.values()),
        artifact_ok=artifact_ok)


async def restore(settings: Settings, storage: Storage, backup_id: PydanticObjectId,
                  request: RestoreRequest, progress: Progress,
                  requested_by: PydanticObjectId | None) -> dict[str, Any]:
    backup = await get_backup(backup_id)
    plan = await plan_restore(settings, storage, backup, request)
    plan.refuse_conflicts()
    if not plan.artifact_ok:
        raise ConflictError("The stored object is missing or damaged; verify the backup")
    source = source_or_error(settings, plan.source)
    safety_id = None
    if plan.safety_backup:
        progress.set_phase("safety backup", f"backing up {plan.target_database} first")
        safety = await back_up(
            settings, storage, Progress(),
            DatabaseBackupCreate(source=source.name, retention_days=SAFETY_RETENTION_DAYS,
                                 notes=f"Pre-restore backup of {plan.target_database} before "
                                       f"restoring backup {backup_id}"),
            admin=requested_by or await system_user_id(), database=plan.target_database)
        safety_id = str(safety.id)
    progress.set_phase("restoring", f"into {plan.target_database}")
    digest = Digest()
    raw = counted(digest.tap(storage.get(require_artifact(backup))), progress.add_read)
    stream = plaintext(raw, backup, settings)
    if source.kind is SourceKind.postgres:
        counts = await _restore_postgres(settings, source, stream, digest, backup,
                                         plan.target_database, request.drop_existing)
    else:
        report = await restore_archive(stream, source.uri.get_secret_value(),
                                       plan.target_database, drop_existing=request.drop_existing)
        if digest.hexdigest != backup.sha256:
            raise SourceError("SHA-256 of the stored object differs from the catalog")
        counts = report.verified_counts
    expected = {c.name: c.count for c in backup.contents if c.count is not None}
    mismatches = {name: {"expected": want, "restored": counts.get(name)}
                  for name, want in expected.items() if counts.get(name) != want}
    if mismatches:
        raise SourceError(f"Restored counts differ from the backup's: {mismatches}", mismatches)
    await update_backup(backup, status=BackupStatus.restored, restored_at=utcnow())
    log.info("backup restored", backup_id=str(backup_id), target=plan.target_database,
             safety_backup=safety_id)
    # Names can hold dots, which not every server accepts as keys: a list, not a map.
    return {"backupId": str(backup_id), "targetDatabase": plan.target_database,
            "counts": [{"name": n, "count": c} for n, c in sorted(counts.items())],
            "safetyBackupId": safety_id}


async def _restore_postgres(settings: Settings, source: SourceSettings, stream: Chunks,
                            digest: Digest, backup: Backup, database: str,
                            drop_existing: bool) -> dict[str, int]:
    """pg_restore -j needs a seekable file: spool the plaintext, check it, restore it."""
    spool_dir = settings.storage.spool_dir or Path(tempfile.gettempdir())
    await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
    pg = PostgresSource(source.uri.get_secret_value(), source.database,
                        PgTools(settings.tools.pg_bin_dir))
    with tempfile.NamedTemporaryFile(dir=spool_dir, prefix="backvault-restore-",
                                     suffix=".pgdump") as spool:
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                await asyncio.to_thread(spool.write, chunk)
        await asyncio.to_thread(spool.flush)
        if digest.hexdigest != backup.sha256:
            raise SourceError("SHA-256 of the stored object differs from the catalog; "
                              "nothing was restored")
        await pg.restore_file(Path(spool.name), database, drop_existing=drop_existing,
                              jobs=max(1, settings.limits.max_concurrent_jobs))
    counts: dict[str, int] = (await pg.describe(database))["counts"]
    return counts


async def run_restore(ctx: JobContext) -> dict[str, Any]:
    """The `restore` job handler."""
    assert ctx.job.backup_id is not None
    request = RestoreRequest.model_validate(ctx.job.params)
    return await restore(ctx.settings, ctx.storage, ctx.job.backup_id, request, ctx.progress,
                         ctx.job.requested_by)
