"""Queueing the jobs whose kind has no submit function of its own service: verify, restore
and cleanup. The API and the CLI both call these (never `runner.submit` themselves)."""

from beanie import PydanticObjectId

from app.models.backup import Backup
from app.models.job import BackupJob, JobKind, JobTrigger
from app.models.job_params import CatalogRebuildParams, CleanupParams, RestoreParams, VerifyParams
from app.models.requests import CleanupRequest, RestoreRequest
from app.services.jobs.runner import JobRunner


async def submit_verify(runner: JobRunner, backup: Backup, requested_by: PydanticObjectId | None,
                        trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `verify` job of one backup."""
    return await runner.submit(JobKind.verify, VerifyParams(), source=backup.source,
                               backup_id=backup.id, requested_by=requested_by, trigger=trigger)


async def submit_restore(runner: JobRunner, backup: Backup, request: RestoreRequest,
                         requested_by: PydanticObjectId | None,
                         trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `restore` job of one backup (the caller has planned it)."""
    params = RestoreParams.model_validate(request.model_dump())
    return await runner.submit(JobKind.restore, params, source=backup.source,
                               backup_id=backup.id, requested_by=requested_by, trigger=trigger)


async def submit_cleanup(runner: JobRunner, request: CleanupRequest,
                         requested_by: PydanticObjectId | None,
                         trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `cleanup` job: retention of one source or of all (then pruning too)."""
    params = CleanupParams.model_validate(request.model_dump())
    return await runner.submit(JobKind.cleanup, params, source=request.source,
                               requested_by=requested_by, trigger=trigger)


async def submit_catalog_rebuild(runner: JobRunner, dry_run: bool,
                                 requested_by: PydanticObjectId | None,
                                 trigger: JobTrigger = JobTrigger.api) -> BackupJob:
    """Queue a `catalog_rebuild` job: recreate missing records from every target's manifests."""
    return await runner.submit(JobKind.catalog_rebuild, CatalogRebuildParams(dry_run=dry_run),
                               requested_by=requested_by, trigger=trigger)
