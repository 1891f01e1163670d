"""Catalog records for the status, dashboard and sources tests: backups, jobs, schedules."""

from datetime import datetime, timedelta
from typing import Any

from beanie import PydanticObjectId

from app.models.backup import Backup, BackupCopy
from app.models.common import utcnow
from app.models.job import BackupJob, JobKind, JobProgress, JobStatus, JobTrigger
from app.models.schedule import Schedule, ScheduleKind

FOREIGN_REPLICA = "another-replica"
# The seed's schema requires an admin on every record: this id is nobody's.
NOBODY = PydanticObjectId("64b7f0000000000000000001")


async def add_backup(source: str, status: str, age: timedelta, *, kind: str = "postgres",
                     stored: int | None = None, retention_days: int = 30,
                     admin: PydanticObjectId | None = None, job: BackupJob | None = None,
                     target: str | None = None, copies: list[BackupCopy] | None = None,
                     chain: list[str] | None = None, now: datetime | None = None,
                     **extra: Any) -> Backup:
    """A finished backup record created `age` ago (no stored object behind it)."""
    good = status in ("completed", "restored")
    backup = Backup(
        admin=admin or NOBODY, type="automatic" if job and job.trigger is JobTrigger.schedule
        else "manual", status=status, source=source, kind=kind,
        created_at=(now or utcnow()) - age, retention_days=retention_days,
        stored_bytes=stored if good or status == "deleted" else None,
        storage_key=f"{source}/x/{age.total_seconds():.0f}.pgdump.zst.age" if good else None,
        storage_target=target, copies=copies or [], job_id=job.id if job else None,
        format_chain=chain if chain is not None else (["pgdump", "zst", "age"] if good else []),
        **extra)
    await backup.insert()
    return backup


async def add_job(kind: JobKind, status: JobStatus, *, source: str | None = None,
                  trigger: JobTrigger = JobTrigger.api,
                  requested_by: PydanticObjectId | None = None,
                  started_ago: timedelta | None = None, progress: JobProgress | None = None,
                  backup_id: PydanticObjectId | None = None) -> BackupJob:
    """A job record. A running one holds another replica's live lease, so this replica's
    runner neither claims nor sweeps it, and counts it against its concurrency."""
    now = utcnow()
    job = BackupJob(kind=kind, status=status, source=source, trigger=trigger,
                    requested_by=requested_by, progress=progress or JobProgress(),
                    backup_id=backup_id,
                    started_at=now - started_ago if started_ago is not None else None)
    if status is JobStatus.running:
        job.lease_owner = FOREIGN_REPLICA
        job.lease_expires_at = now + timedelta(minutes=10)
        job.heartbeat_at = now
    if status in (JobStatus.completed, JobStatus.failed):
        job.finished_at = now
    await job.insert()
    return job


async def add_schedule(name: str, kind: ScheduleKind, cron: str, sources: list[str],
                       enabled: bool = True) -> Schedule:
    schedule = Schedule(name=name, kind=kind, cron=cron, sources=sources, enabled=enabled)
    await schedule.insert()
    return schedule


async def clear_schedules() -> None:
    await Schedule.find_all().delete()
