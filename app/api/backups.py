"""The backup catalog: list, detail, statistics, health, configuration."""

from typing import Annotated, Any

from beanie import PydanticObjectId
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.api.deps import AdminUser, CurrentUser, SettingsDep
from app.config import public_view
from app.models.backup import BackupExportRequest, BackupFilter, BackupOut
from app.models.common import Page, utcnow
from app.models.stats import BackupStats, HealthReport
from app.services import catalog, stats

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


@router.get("/health", response_model=HealthReport)
async def backup_health(_: CurrentUser) -> HealthReport:
    """Critical without a successful backup in 24 h, warning on more than 3 failures in 7 days."""
    return await stats.backup_health()


@router.get("/config")
async def effective_config(settings: SettingsDep, _: CurrentUser) -> dict[str, Any]:
    """The effective settings with every secret removed."""
    view: dict[str, Any] = public_view(settings)
    view["sources"] = [public_view(s) for s in settings.all_sources()]
    return view


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
