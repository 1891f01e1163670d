"""The backup catalog: list, detail, statistics, health, configuration."""

from typing import Annotated, Any

from beanie import PydanticObjectId
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.api.deps import (
    AdminUser,
    CurrentUser,
    RunnerDep,
    SettingsDep,
    SuperUser,
    TargetsDep,
)
from app.config import ContentType, public_view
from app.errors import InvalidInputError, PermissionDeniedError
from app.models.backup import BackupExportRequest, BackupFilter, BackupOut
from app.models.common import Page, utcnow
from app.models.content import (
    ContentBackupCreate,
    ContentImportRequest,
    ContentItem,
    ContentItemOut,
    FullBackupCreate,
    ItemStatus,
)
from app.models.dashboard import BackupsStatus, Dashboard
from app.models.doctor import DeepHealthReport
from app.models.job import BackupJob, JobOut
from app.models.requests import CleanupRequest, DatabaseBackupCreate, RestoreRequest
from app.models.schedule import ScheduleStatus
from app.models.stats import BackupStats, HealthReport, HealthStatus
from app.models.storage import StoredFile
from app.models.user import Role
from app.scheduler import status as schedule_runs
from app.services.artifacts.read import require_artifact
from app.services.catalog import dashboard, downloads, stats, trash
from app.services.catalog import queries as catalog
from app.services.catalog import status as live_status
from app.services.catalog.retention import CleanupResult, apply_retention
from app.services.content import backup as content_backups
from app.services.content import restore as content_restore
from app.services.content.ipfs import CAR_TYPE
from app.services.databases import backup as backups
from app.services.databases import restore as restores
from app.services.databases.restore import RestorePlan
from app.services.jobs import submit
from app.services.jobs.runner import JobRunner
from app.services.ops import doctor
from app.services.ops.space import space_issues
from app.services.storage.base import StorageError, check_prefix

router = APIRouter(prefix="/api/backups", tags=["backups"])


@router.get("", response_model=Page[BackupOut])
async def list_backups(filters: Annotated[BackupFilter, Query()],
                       _: CurrentUser) -> Page[BackupOut]:
    """Backups, newest first, filtered by status, type, source and creation time."""
    return await catalog.list_backups(filters)


@router.get("/stats", response_model=BackupStats)
async def backup_stats(_: CurrentUser) -> BackupStats:
    """Counts by status and type, sizes, success rate, monthly report, admin activity."""
    return await stats.backup_stats()


@router.get("/status", response_model=BackupsStatus)
async def backups_status(request: Request, settings: SettingsDep,
                         _: CurrentUser) -> BackupsStatus:
    """The scheduler's state, active jobs with progress, rate and ETA, the concurrency limit,
    and for database and content backups: enabled, last backup, totals, failures."""
    running = live_status.scheduler_running(request.app.state)
    return await live_status.backups_status(settings, running)


@router.get("/dashboard", response_model=Dashboard)
async def backups_dashboard(settings: SettingsDep, _: CurrentUser) -> Dashboard:
    """Recent backups and who started them, 30-day totals, storage per source and target,
    what retention removes next, per-day counts, storage over time, next runs, health."""
    return await dashboard.dashboard(settings)


@router.get("/health", response_model=HealthReport | DeepHealthReport)
async def backup_health(settings: SettingsDep, user: CurrentUser, targets: TargetsDep,
                        deep: Annotated[bool, Query(description="also probe storage, space, "
                                                    "sources, endpoints, the catalog and "
                                                    "notification URLs (admin)")] = False
                        ) -> HealthReport | DeepHealthReport:
    """Per source: critical without a good backup in 24 h, warning on >3 failures in 7 days;
    low free space is a warning. `deep=true` (admin) runs every deep check too."""
    if deep and not user.role.allows(Role.admin):
        raise PermissionDeniedError("A deep health check needs the admin role",
                                    {"required": Role.admin.value, "role": user.role.value})
    report = await stats.backup_health(settings)
    if deep:
        return await doctor.deep_health(settings, targets, report)
    low = await space_issues(settings)
    return doctor.with_issues(report, low, HealthStatus.warning if low else report.status)


@router.get("/config")
async def effective_config(settings: SettingsDep, _: CurrentUser) -> dict[str, Any]:
    """The effective settings with every secret removed."""
    view: dict[str, Any] = public_view(settings)
    view["sources"] = [public_view(s) for s in settings.all_sources()]
    return view


@router.post("/database", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
async def create_database_backup(body: DatabaseBackupCreate, user: AdminUser,
                                 runner: RunnerDep) -> JobOut:
    """Start a backup of a PostgreSQL or MongoDB source (admin); returns its job."""
    job = await backups.submit_database_backup(runner, body, user.id)
    return catalog.job_out(job)


@router.post("/content", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
async def create_content_backup(body: ContentBackupCreate, user: AdminUser,
                                runner: RunnerDep) -> JobOut:
    """Start a backup of an IPFS or Gaia content source (admin); returns its job."""
    return catalog.job_out(await content_backups.submit_content_backup(runner, body, user.id))


@router.post("/full", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
async def create_full_backup(body: FullBackupCreate, user: AdminUser,
                             runner: RunnerDep) -> JobOut:
    """Back up databases and content in one job (admin); default: every source."""
    return catalog.job_out(await content_backups.submit_full_backup(runner, body, user.id))


@router.get("/schedule/status", response_model=list[ScheduleStatus])
async def schedule_status(settings: SettingsDep, _: CurrentUser) -> list[ScheduleStatus]:
    """Each schedule with its last run, that run's outcome, and its next run."""
    return await schedule_runs.schedule_status(settings=settings)


@router.post("/cleanup", response_model=JobOut | CleanupResult,
             status_code=status.HTTP_202_ACCEPTED)
async def cleanup(body: CleanupRequest, user: AdminUser, runner: RunnerDep,
                  targets: TargetsDep, settings: SettingsDep, response: Response,
                  wait: Annotated[bool, Query(description="answer when done")] = False
                  ) -> JobOut | CleanupResult:
    """Apply retention (admin). A dry run answers at once with what would go and why."""
    if body.source is not None and settings.content_source(body.source) is None:
        backups.source_or_error(settings, body.source)
    if body.dry_run:
        response.status_code = status.HTTP_200_OK
        return await apply_retention(settings, targets, body)
    job = await submit.submit_cleanup(runner, body, user.id)
    return await _job_response(job, runner, wait, response)


@router.get("/files", response_model=list[StoredFile])
async def stored_files(targets: TargetsDep, _: CurrentUser,
                       prefix: Annotated[str, Query(max_length=512)] = "",
                       limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                       target: Annotated[str | None, Query(
                           max_length=63, description="storage target; default: the "
                                                      "default target")] = None,
                       ) -> list[StoredFile]:
    """Objects on one storage target, by key."""
    try:
        check_prefix(prefix)
    except StorageError as exc:
        raise InvalidInputError(exc.message, [{"field": "prefix", "message": "a relative "
                                               "key prefix (no leading /, no . or ..)"}]
                                ) from None
    storage = targets.named(target)
    name = target or targets.default_name
    files = []
    async for info in storage.list_objects(prefix):
        files.append(StoredFile(key=info.key, size=info.size, modified=info.modified,
                                target=name))
        if len(files) >= limit:
            break
    return files


@router.post("/export", response_class=StreamingResponse,
             responses={200: {"content": {"application/json": {}}}})
async def export_metadata(body: BackupExportRequest, _: AdminUser) -> StreamingResponse:
    """Export the catalog records matching the filters as a JSON file (admin)."""
    query = catalog.backup_query(BackupFilter.model_validate(body.model_dump(by_alias=True)))
    name = f"backvault-catalog-{utcnow():%Y%m%dT%H%M%SZ}.json"
    return StreamingResponse(catalog.export_backups(query), media_type="application/json",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/{backup_id}", response_model=BackupOut)
async def get_backup(backup_id: PydanticObjectId, _: CurrentUser) -> BackupOut:
    """One backup."""
    return BackupOut.model_validate(await catalog.get_backup(backup_id))


def _download(found: downloads.StoredObject, media_type: str) -> StreamingResponse:
    return StreamingResponse(found.chunks(), media_type=media_type, headers={
        "Content-Length": str(found.info.size),
        "Content-Disposition": f'attachment; filename="{found.filename}"',
        "X-Backvault-Target": found.target})


@router.get("/{backup_id}/manifest", response_class=StreamingResponse,
            responses={200: {"content": {"application/json": {}}}})
async def download_manifest(backup_id: PydanticObjectId, targets: TargetsDep,
                            _: CurrentUser) -> StreamingResponse:
    """The manifest stored beside the artifact, as stored: contents, checksums, recipients
    (public keys) and the stock-tool restore command. No secrets, so viewers may read it."""
    backup = await catalog.get_backup(backup_id)
    return _download(await downloads.manifest_of(targets, backup), "application/json")


@router.get("/{backup_id}/artifact", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download_artifact(backup_id: PydanticObjectId, targets: TargetsDep,
                            _: AdminUser) -> StreamingResponse:
    """The stored artifact, byte for byte (still compressed and encrypted), from its target
    or else a copy (admin); restore it with the manifest's stock-tool command."""
    backup = await catalog.get_backup(backup_id)
    found = await downloads.artifact_of(targets, backup)
    response = _download(found, "application/octet-stream")
    if backup.sha256:
        response.headers["X-Backvault-SHA256"] = backup.sha256
    return response


@router.delete("/{backup_id}", response_model=BackupOut)
async def delete_backup(
        backup_id: PydanticObjectId, targets: TargetsDep, settings: SettingsDep,
        user: SuperUser,
        force: Annotated[bool, Query(description="delete below retention.min_count, or "
                                                 "remove a trashed backup now")] = False,
        reason: Annotated[str | None, Query(max_length=500,
                                            description="why; required with force")] = None,
) -> BackupOut:
    """Move a backup to the trash (superadmin); below the minimum only with force and reason."""
    return BackupOut.model_validate(await trash.delete_backup(
        settings, targets, backup_id, user.username, force=force, reason=reason))


@router.post("/{backup_id}/undelete", response_model=BackupOut)
async def undelete_backup(backup_id: PydanticObjectId, user: SuperUser) -> BackupOut:
    """Take a backup out of the trash, back to its status before deletion (superadmin)."""
    return BackupOut.model_validate(await trash.undelete_backup(backup_id, user.username))


async def _job_response(job: BackupJob, runner: JobRunner, wait: bool,
                        response: Response) -> JobOut:
    if wait:
        assert job.id is not None
        job = await runner.wait(job.id, runner.settings.limits.timeout_seconds)
        response.status_code = status.HTTP_200_OK
    return catalog.job_out(job)


@router.post("/{backup_id}/verify", response_model=JobOut,
             status_code=status.HTTP_202_ACCEPTED)
async def verify_backup(backup_id: PydanticObjectId, user: AdminUser, runner: RunnerDep,
                        response: Response,
                        wait: Annotated[bool, Query(description="answer when done")] = False
                        ) -> JobOut:
    """Re-read the stored object and check size, SHA-256 and inner format (admin)."""
    backup = await catalog.get_backup(backup_id)
    require_artifact(backup)
    job = await submit.submit_verify(runner, backup, user.id)
    return await _job_response(job, runner, wait, response)


@router.get("/{backup_id}/items", response_model=list[ContentItemOut])
async def content_items(backup_id: PydanticObjectId, _: CurrentUser,
                        status_: Annotated[ItemStatus | None, Query(alias="status")] = None,
                        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
                        ) -> list[ContentItemOut]:
    """The items of a content backup: reference, address, status, failure reason."""
    await catalog.get_backup(backup_id)
    query: dict[str, Any] = {"backupId": backup_id}
    if status_ is not None:
        query["status"] = status_.value
    items = await ContentItem.find(query).limit(limit).to_list()
    return [ContentItemOut.model_validate(i, from_attributes=True) for i in items]


@router.get("/{backup_id}/export.car", response_class=StreamingResponse,
            responses={200: {"content": {CAR_TYPE: {}}}})
async def export_car(backup_id: PydanticObjectId, targets: TargetsDep, settings: SettingsDep,
                     _: SuperUser) -> StreamingResponse:
    """A content backup's IPFS items as one CAR (superadmin); `ipfs dag import` takes it."""
    await content_restore.content_backup(backup_id)
    items = await content_restore.stored_items(backup_id, ContentType.ipfs)
    await content_restore.readable_objects(settings, targets, items)
    return StreamingResponse(
        content_restore.car_stream(settings, targets, items), media_type=CAR_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{backup_id}.car"'})


@router.get("/{backup_id}/export.tar", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-tar": {}}}})
async def export_tar(backup_id: PydanticObjectId, targets: TargetsDep, settings: SettingsDep,
                     _: SuperUser) -> StreamingResponse:
    """A content backup's Gaia files as a tar of `address/path` (superadmin)."""
    await content_restore.content_backup(backup_id)
    items = await content_restore.stored_items(backup_id, ContentType.gaia)
    await content_restore.readable_objects(settings, targets, items)
    return StreamingResponse(
        content_restore.tar_stream(settings, targets, items), media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{backup_id}.tar"'})


@router.post("/{backup_id}/import", response_model=JobOut,
             status_code=status.HTTP_202_ACCEPTED)
async def import_content(backup_id: PydanticObjectId, body: ContentImportRequest,
                         user: SuperUser, runner: RunnerDep, response: Response,
                         wait: Annotated[bool, Query(description="answer when done")] = False
                         ) -> JobOut:
    """Re-import a content backup's IPFS items into the configured Kubo node and pin them
    (superadmin); every block is checked against its CID first."""
    backup = await content_restore.content_backup(backup_id)
    job = await content_restore.submit_content_import(runner, backup, body, user.id)
    return await _job_response(job, runner, wait, response)


@router.post("/{backup_id}/restore", response_model=JobOut | RestorePlan,
             status_code=status.HTTP_202_ACCEPTED)
async def restore_backup(backup_id: PydanticObjectId, body: RestoreRequest, user: SuperUser,
                         runner: RunnerDep, targets: TargetsDep, settings: SettingsDep,
                         response: Response,
                         wait: Annotated[bool, Query(description="answer when done")] = False
                         ) -> JobOut | RestorePlan:
    """Restore into the source's database or another one (superadmin). A dry run answers
    the plan at once and touches nothing."""
    backup = await catalog.get_backup(backup_id)
    plan = await restores.plan_restore(settings, targets, backup, body)
    if body.dry_run:
        response.status_code = status.HTTP_200_OK
        return plan
    job = await submit.submit_restore(runner, backup, body, user.id)
    return await _job_response(job, runner, wait, response)
