"""Sources as the console shows them, and their connection test."""

from fastapi import APIRouter

from app.api.deps import AdminUser, CurrentUser, SettingsDep
from app.config.common import SourceName
from app.models.dashboard import SourceOut, SourceTestResult
from app.services.catalog import sources_overview

router = APIRouter(prefix="/api/sources", tags=["sources"])


@router.get("", response_model=list[SourceOut])
async def list_sources(settings: SettingsDep, _: CurrentUser) -> list[SourceOut]:
    """Every database and content source: kind, host and port (never credentials), database,
    last good backup and next scheduled run."""
    return await sources_overview.sources_overview(settings)


@router.post("/{name}/test", response_model=SourceTestResult)
async def check_connection(name: SourceName, settings: SettingsDep,
                           _: AdminUser) -> SourceTestResult:
    """Connect to a source (admin): reachable, server version, latency; 5 s at most."""
    return await sources_overview.check_source(settings, name)
