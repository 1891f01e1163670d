"""Point-in-time recovery of PostgreSQL sources: windows, base backups, restore to a time."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from app.api.deps import AdminUser, CurrentUser, RunnerDep, SettingsDep, SuperUser
from app.models.job import JobOut
from app.models.wal import PitrRestoreRequest
from app.services.catalog import queries as catalog
from app.services.pitr import restore as pitr_restore
from app.services.pitr.basebackup import pitr_source, submit_base_backup
from app.services.pitr.verify import submit_pitr_verify
from app.services.pitr.window import PitrWindow, pitr_source_names, source_window

router = APIRouter(prefix="/api/pitr", tags=["pitr"])


@router.get("", response_model=list[PitrWindow])
async def list_windows(settings: SettingsDep, _: CurrentUser) -> list[PitrWindow]:
    """The recoverable window of every PITR source."""
    return [await source_window(settings, name) for name in await pitr_source_names(settings)]


@router.get("/{source}/window", response_model=PitrWindow)
async def get_window(source: str, settings: SettingsDep, _: CurrentUser) -> PitrWindow:
    """Earliest and latest restorable time of one source, its gaps and base backups."""
    pitr_source(settings, source)
    return await source_window(settings, source)


@router.get("/{source}", response_model=PitrWindow)
async def get_source(source: str, settings: SettingsDep, _: CurrentUser) -> PitrWindow:
    """The same as `/{source}/window` (the design's short form)."""
    pitr_source(settings, source)
    return await source_window(settings, source)


@router.post("/{source}/basebackup", response_model=JobOut,
             status_code=status.HTTP_202_ACCEPTED)
async def post_base_backup(source: str, user: AdminUser, runner: RunnerDep) -> JobOut:
    """Queue a base backup (pg_basebackup, streamed) of one source (admin)."""
    return catalog.job_out(await submit_base_backup(runner, source, user.id))


@router.post("/{source}/verify", response_model=JobOut,
             status_code=status.HTTP_202_ACCEPTED)
async def post_verify(source: str, user: AdminUser, runner: RunnerDep,
                      drill: Annotated[bool, Query(description="also restore to the latest "
                                                               "time (RTO)")] = True) -> JobOut:
    """Check every archived WAL object and the newest base backup, then a drill (admin)."""
    return catalog.job_out(await submit_pitr_verify(runner, source, drill, user.id))


@router.post("/{source}/restore", response_model=pitr_restore.PitrRestorePlan | JobOut)
async def post_restore(source: str, body: PitrRestoreRequest, user: SuperUser,
                       runner: RunnerDep) -> Any:
    """Restore a source to a moment into a private instance (superadmin); `dryRun` (the
    default) answers the plan: base backup, WAL to replay, estimated time."""
    plan = await pitr_restore.plan_restore(runner.settings, source, body)
    if body.dry_run:
        return plan
    return catalog.job_out(await pitr_restore.submit_restore(runner, source, body, user.id))
