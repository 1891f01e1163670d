"""Free space on local storage targets, SFTP ones (deep health only: it connects) and the
restore spool, against the largest recent backup: less than twice that is a warning (a
backup or a restore may not fit). Object stores have no free space to read."""

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from app.config import Settings, StorageBackend
from app.models.backup import GOOD_STATUSES, Backup, BackupKind
from app.models.common import utcnow
from app.models.doctor import CheckStatus, DoctorCheck
from app.services.jobs.runner import error_text
from app.services.storage import StorageTargets
from app.services.storage.wrappers import backend_of

RECENT_DAYS = 30
HEADROOM = 2  # free space wanted, in multiples of the largest recent backup
GB = 1024**3
REMOTE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Largest:
    """The largest recent good backup: as stored (a target holds it) and in plaintext
    (a PostgreSQL restore spools it whole)."""

    stored: int = 0
    plaintext: int = 0


async def largest_recent(days: int = RECENT_DAYS) -> Largest:
    stored = plaintext = 0
    query = {"status": {"$in": [s.value for s in GOOD_STATUSES]},
             "createdAt": {"$gte": utcnow() - timedelta(days=days)}}
    async for doc in Backup.get_pymongo_collection().find(
            query, {"storedBytes": 1, "plaintextBytes": 1, "kind": 1}):
        stored = max(stored, doc.get("storedBytes") or 0)
        if doc.get("kind") != BackupKind.content.value:
            plaintext = max(plaintext, doc.get("plaintextBytes") or 0)
    return Largest(stored, plaintext)


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds path (or would, once created)."""
    probe = path.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def spool_dir(settings: Settings) -> Path:
    return settings.storage.spool_dir or Path(tempfile.gettempdir())


@runtime_checkable
class ReportsFreeSpace(Protocol):
    """A remote backend that can say how much room it has left (SFTP)."""

    @property
    def location(self) -> str: ...

    async def free_space(self) -> int | None: ...


async def space_check(area_name: str, path: Path, needed: int) -> DoctorCheck:
    """One path's free space against `needed` bytes (HEADROOM times a backup)."""
    try:
        free = await asyncio.to_thread(free_bytes, path)
    except OSError as exc:
        return DoctorCheck(area="space", name=area_name, status=CheckStatus.failed,
                           detail=f"cannot read free space of {path}: {exc.strerror or exc}")
    return _judged(area_name, str(path), free, needed)


def _reporting(targets: StorageTargets) -> list[tuple[str, ReportsFreeSpace]]:
    """The targets whose backend (under its wrappers) can report its free space."""
    found: list[tuple[str, ReportsFreeSpace]] = []
    for name in targets.names():
        backend = backend_of(targets.named(name))
        if isinstance(backend, ReportsFreeSpace):
            found.append((name, backend))
    return found


async def _remote_check(name: str, backend: ReportsFreeSpace, needed: int) -> DoctorCheck:
    where = backend.location
    try:
        free = await asyncio.wait_for(backend.free_space(), REMOTE_TIMEOUT_SECONDS)
    except Exception as exc:  # a failed check, never a failed health report
        detail = f"Cannot read the free space of {where}: no answer within " \
                 f"{REMOTE_TIMEOUT_SECONDS:g} s" if isinstance(exc, TimeoutError) \
            else error_text(exc)  # the backend's message names the target
        return DoctorCheck(area="space", name=f"target {name}", status=CheckStatus.failed,
                           detail=detail)
    if free is None:  # said, so that no one takes the missing figure for room enough
        return DoctorCheck(area="space", name=f"target {name}", status=CheckStatus.ok,
                           facts={"path": where},
                           detail="free space not reported by the server")
    return _judged(f"target {name}", where, free, needed)


def _judged(area_name: str, path: str, free: int, needed: int) -> DoctorCheck:
    facts = {"path": path, "freeBytes": free, "neededBytes": needed}
    if needed and free < needed:
        return DoctorCheck(
            area="space", name=area_name, status=CheckStatus.warning, facts=facts,
            detail=f"low free space: {free / GB:.2f} GB free, less than {HEADROOM}x the "
                   f"largest recent backup ({needed / HEADROOM / GB:.2f} GB)")
    return DoctorCheck(area="space", name=area_name, status=CheckStatus.ok, facts=facts,
                       detail=f"{free / GB:.2f} GB free")


async def space_checks(settings: Settings,
                       targets: StorageTargets | None = None) -> list[DoctorCheck]:
    """Each local target and the restore spool; with `targets`, the remote ones that
    report their free space too."""
    largest = await largest_recent()
    checks = [await space_check(f"target {t.name}", t.local_dir, HEADROOM * largest.stored)
              for t in settings.storage.target_list()
              if t.kind is StorageBackend.local and t.local_dir is not None]
    checks += await asyncio.gather(*(_remote_check(name, backend, HEADROOM * largest.stored)
                                     for name, backend in (_reporting(targets) if targets
                                                           else [])))
    checks.append(await space_check("restore spool", spool_dir(settings),
                                    HEADROOM * largest.plaintext))
    return checks


async def space_issues(settings: Settings) -> list[str]:
    """The low-space warnings, as health issues."""
    return [c.issue for c in await space_checks(settings) if c.status is not CheckStatus.ok]
