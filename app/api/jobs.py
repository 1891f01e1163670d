"""Jobs: every operation the service ran or is running, with progress."""

from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query

from app.api.deps import CurrentUser
from app.models.common import Page
from app.models.job import JobFilter, JobOut
from app.services import catalog

router = APIRouter(prefix="/api/backups/jobs", tags=["jobs"])


@router.get("", response_model=Page[JobOut])
async def list_jobs(filters: Annotated[JobFilter, Query()], _: CurrentUser) -> Page[JobOut]:
    """Jobs, newest first, filtered by status, kind and source."""
    return await catalog.list_jobs(filters)


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: PydanticObjectId, _: CurrentUser) -> JobOut:
    """One job with its progress."""
    return catalog.job_out(await catalog.get_job(job_id))
