"""Database sources added at runtime (admin): the URI goes in once and never comes out."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from app.api.deps import AdminUser, CurrentUser, SettingsDep
from app.config.common import SourceName
from app.models.managed_source import ManagedSourceCreate, ManagedSourceOut, ManagedSourceUpdate
from app.services.catalog import managed_sources

router = APIRouter(prefix="/api/sources", tags=["sources"])


@router.get("/managed", response_model=list[ManagedSourceOut])
async def list_managed(settings: SettingsDep, _: CurrentUser) -> list[ManagedSourceOut]:
    """The sources added at runtime, by name (host and port only, never credentials)."""
    return await managed_sources.list_sources(settings)


@router.post("", response_model=ManagedSourceOut, status_code=status.HTTP_201_CREATED)
async def add_source(body: ManagedSourceCreate, request: Request, settings: SettingsDep,
                     user: AdminUser) -> ManagedSourceOut:
    """Add a database source; every replica backs it up without a restart (admin)."""
    request.state.audit_details = {"source": body.name, "kind": body.kind.value}
    return await managed_sources.create(settings, body, user.username)


@router.patch("/{name}", response_model=ManagedSourceOut)
async def edit_source(name: SourceName, body: ManagedSourceUpdate, settings: SettingsDep,
                      _: AdminUser) -> ManagedSourceOut:
    """Change a runtime source; sources from the environment are read-only (admin)."""
    return await managed_sources.update(settings, name, body)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_source(name: SourceName, settings: SettingsDep, _: AdminUser,
                        confirm: Annotated[str | None, Query(max_length=63)] = None) -> None:
    """Remove a runtime source (`confirm` must repeat its name); its backups stay (admin)."""
    await managed_sources.delete(settings, name, confirm)
