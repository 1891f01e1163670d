"""One restore drill of a database source: download the newest good backup, restore it
into a scratch database with the kind's own restore, compare counts with the manifest,
run the source's checks, time each phase (the RTO), then drop the scratch database."""

import asyncio
import re
import tempfile
import time
from collections.abc import Awaitable
from contextlib import aclosing
from pathlib import Path
from typing import IO, TypeVar

import structlog

from app.config import Settings, SourceSettings
from app.errors import ConflictError
from app.models.backup import Backup
from app.models.common import utcnow
from app.models.drill import DrillCheck, DrillResult, RestoreDrill
from app.services.artifacts.read import plaintext, require_artifact
from app.services.artifacts.stages import Chunks, Digest
from app.services.databases.kinds import kind_of
from app.services.databases.restore import protected_reason
from app.services.jobs.runner import Progress, error_text
from app.services.recoverability.scratch import (
    drop_scratch,
    run_check,
    scratch_source,
)
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)
CHUNK = 1024 * 1024
T = TypeVar("T")


def scratch_name(prefix: str, source: str) -> str:
    """prefix + source + UTC time: a new name each drill, within PostgreSQL's 63 bytes."""
    if not prefix:
        raise ConflictError("drills.prefix must not be empty: a drill only ever restores "
                            "into a database named by it")
    stamp = utcnow().strftime("%Y%m%d%H%M%S%f")[:17]
    part = re.sub(r"[^a-z0-9_]", "_", source.lower())[:63 - len(prefix) - len(stamp) - 1]
    return f"{prefix}{part}_{stamp}"


async def _file_chunks(spool: IO[bytes]) -> Chunks:
    await asyncio.to_thread(spool.seek, 0)
    while chunk := await asyncio.to_thread(spool.read, CHUNK):
        yield chunk


async def _download(storage_targets: StorageTargets, backup: Backup, spool: IO[bytes],
                    progress: Progress) -> list[str]:
    """The stored object into the spool file, checked against the catalog."""
    digest = Digest()
    storage = storage_targets.for_backup(backup)
    async with aclosing(storage.get(require_artifact(backup))) as chunks:
        async for chunk in digest.tap(chunks):
            await asyncio.to_thread(spool.write, chunk)
            progress.add_read(len(chunk))
    await asyncio.to_thread(spool.flush)
    if digest.hexdigest != backup.sha256 or digest.size != backup.stored_bytes:
        return [f"download: the stored object ({digest.size} bytes) differs from the "
                f"catalog's size ({backup.stored_bytes}) or SHA-256"]
    return []


class Drill:
    """The running state of one database drill and its record."""

    def __init__(self, settings: Settings, source: SourceSettings, backup: Backup,
                 record: RestoreDrill) -> None:
        self.settings, self.backup, self.record = settings, backup, record
        self.source = scratch_source(settings, source)
        self.on_source_server = self.source is source
        self.database = record.scratch_database or ""
        self.created = False

    async def timed(self, phase: str, work: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            return await work
        finally:
            self.record.phases[f"{phase}_s"] = round(time.monotonic() - started, 3)

    def check(self, name: str, passed: bool, detail: str | None = None) -> None:
        self.record.checks.append(DrillCheck(name=name, passed=passed, detail=detail))
        if not passed:
            self.record.failures.append(f"{name}: {detail}" if detail else name)

    async def refuse_unsafe_target(self) -> None:
        """The scratch name must be new and never a protected database; on the source's
        own server, that server must still be the one the backup came from (a source's
        URI changed by an admin must not receive its backups in plaintext)."""
        now = self.source.server()
        if self.on_source_server and self.backup.server and self.backup.server != now:
            raise ConflictError(
                f"Drill refused: the backup came from {self.backup.server} but source "
                f"{self.source.name} now points at {now}; configure a drill server for it "
                "(BACKUP_DRILLS__SOURCES uri) to drill this backup")
        reason = protected_reason(self.settings, self.source, self.database)
        if reason is not None:
            raise ConflictError(f"Drill refused to restore into {self.database}: {reason}")
        exists, _, counts = await kind_of(self.source.kind).inspect_target(
            self.settings, self.source, self.database)
        if exists or counts:
            raise ConflictError(f"Drill refused to restore into {self.database}: it exists")

    async def restore(self, spool: IO[bytes]) -> dict[str, int]:
        digest = Digest()
        stream = plaintext(digest.tap(_file_chunks(spool)), self.backup, self.settings)
        self.created = True
        return await kind_of(self.source.kind).restore(
            self.settings, self.source, stream, digest=digest, sha256=self.backup.sha256,
            database=self.database, drop_existing=False)

    def compare_counts(self, counts: dict[str, int]) -> None:
        word = kind_of(self.source.kind).item_word
        for entry in self.backup.contents:
            if entry.count is None:
                continue
            got = counts.get(entry.name)
            self.check(f"count {entry.name}", got == entry.count,
                       None if got == entry.count else
                       f"{word} {entry.name}: {got if got is not None else 'missing'} "
                       f"restored, {entry.count} in the manifest")

    async def source_checks(self) -> None:
        checks = self.settings.drills.for_source(self.source.name).checks
        for check in checks:
            try:
                value = await run_check(self.source, self.database, check,
                                        self.backup.created_at)
            except Exception as exc:
                self.check(f"check {check.name}", False, error_text(exc))
                continue
            ok = value >= check.minimum
            self.check(f"check {check.name}", ok,
                       f"{value:g} (expected at least {check.minimum:g})")

    async def run(self, targets: StorageTargets, progress: Progress) -> None:
        spool_dir = self.settings.storage.spool_dir or Path(tempfile.gettempdir())
        await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
        await self.refuse_unsafe_target()
        with tempfile.TemporaryFile(dir=spool_dir, prefix="backvault-drill-") as spool:
            progress.set_phase("drill: download", f"backup {self.backup.id}")
            problems = await self.timed("download", _download(targets, self.backup, spool,
                                                              progress))
            if problems:
                self.record.failures += problems
                return
            progress.set_phase("drill: restore", f"into {self.database}")
            try:
                counts = await self.timed("restore", self.restore(spool))
            except Exception as exc:
                self.check("restore", False, error_text(exc))
                return
        self.check("restore", True, f"into {self.database}")
        progress.set_phase("drill: checks")
        started = time.monotonic()
        self.compare_counts(counts)
        await self.source_checks()
        self.record.phases["checks_s"] = round(time.monotonic() - started, 3)

    async def finish(self) -> None:
        """Drop the scratch database unless a failure should be kept for a look."""
        failed = bool(self.record.failures)
        keep = failed and self.settings.drills.keep_failed and self.created
        if self.created and not keep:
            try:
                await drop_scratch(self.settings, self.source, self.database)
            except Exception as exc:
                self.record.failures.append(f"drop {self.database}: {error_text(exc)}")
        self.record.kept = keep


def close_record(record: RestoreDrill, error: str | None = None) -> None:
    """Result and RTO from what the drill recorded."""
    if error:
        record.failures.append(error)
    phases = record.phases
    if {"download_s", "restore_s", "checks_s"} <= phases.keys():
        record.rto_s = round(phases["download_s"] + phases["restore_s"] + phases["checks_s"],
                             3)
    record.over_target = (record.rto_s is not None and record.rto_target_s is not None
                          and record.rto_s > record.rto_target_s)
    record.result = DrillResult.failed if record.failures else DrillResult.passed
    record.finished_at = utcnow()


async def drill_database(settings: Settings, targets: StorageTargets, source: SourceSettings,
                         backup: Backup, record: RestoreDrill, progress: Progress) -> None:
    """Run a database drill into `record` (already inserted); the record is saved after."""
    record.scratch_database = scratch_name(settings.drills.prefix, source.name)
    await record.save()
    drill = Drill(settings, source, backup, record)
    error = None
    try:
        await drill.run(targets, progress)
    except Exception as exc:
        error = error_text(exc)
    finally:
        await asyncio.shield(drill.finish())
    close_record(record, error)

