"""A PITR source's drill (mode "pitr"), beside its dump drill: every archived WAL object and
the newest base backup re-hashed (phase wal_check), then a restore to the latest time in a
private instance that must promote, stopped and removed after (phase restore). The RTO is
the sum of both phases: what recovering the source to now would take."""

import asyncio
import time

import structlog
from beanie import PydanticObjectId

from app.config import Settings
from app.models.drill import DrillCheck, RestoreDrill
from app.services.jobs.runner import Progress, error_text
from app.services.pitr.verify import check_pitr_objects, restore_latest
from app.services.pitr.window import base_backups
from app.services.recoverability.restore_drill import close_record
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)
MODE = "pitr"


async def has_pitr_drill(settings: Settings, source: str) -> bool:
    """A PITR source with at least one base backup gets a PITR drill."""
    return source in settings.pitr.sources and bool(await base_backups(source))


async def _run(settings: Settings, targets: StorageTargets, record: RestoreDrill,
               progress: Progress) -> None:
    started = time.monotonic()
    checked = await check_pitr_objects(targets, record.source, progress)
    record.phases["wal_check_s"] = round(time.monotonic() - started, 3)
    damaged: list[str] = checked["damaged"]
    record.checks.append(DrillCheck(
        name="wal_check", passed=not damaged,
        detail=f"{checked['walChecked']} WAL files and base backup "
               f"{checked.get('baseBackupId')}" + (f": {len(damaged)} damaged" if damaged
                                                     else "")))
    if damaged:
        record.failures += damaged
        return
    progress.set_phase("drill: pitr restore", "to the latest time")
    started = time.monotonic()
    try:
        restored = await restore_latest(settings, targets, progress, record.source,
                                        f"drill-{record.id}")
    except Exception as exc:
        record.phases["restore_s"] = round(time.monotonic() - started, 3)
        record.checks.append(DrillCheck(name="restore", passed=False, detail=error_text(exc)))
        record.failures.append(f"restore: {error_text(exc)}")
        return
    record.backup_id = PydanticObjectId(restored["baseBackupId"])
    record.phases["restore_s"] = restored["restoreSeconds"]
    record.checks.append(DrillCheck(
        name="restore", passed=True,
        detail=f"to the latest time with {restored['walFiles']} WAL files, promoted"))
    record.rto_s = round(record.phases["wal_check_s"] + record.phases["restore_s"], 3)


async def drill_pitr(settings: Settings, targets: StorageTargets, source: str,
                     job_id: PydanticObjectId | None, progress: Progress) -> RestoreDrill:
    """Drill one PITR source into a new record (mode "pitr"), whatever happens."""
    bases = await base_backups(source)
    record = RestoreDrill(source=source, mode=MODE, job_id=job_id,
                          backup_id=bases[-1].id if bases else None,
                          rto_target_s=settings.drills.rto_target(source))
    await record.insert()
    try:
        if not bases:
            close_record(record, "no base backup of this source to restore")
        else:
            await _run(settings, targets, record, progress)
            close_record(record)
    except asyncio.CancelledError:
        close_record(record, "the drill was cancelled")
        await asyncio.shield(record.save())
        raise
    except Exception as exc:
        close_record(record, error_text(exc))
    await record.save()
    log.info("PITR restore drill done", source=source, result=record.result.value,
             rto_s=record.rto_s, failures=record.failures[:3])
    return record
