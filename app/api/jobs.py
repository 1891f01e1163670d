"""Jobs: every operation the service ran or is running, with progress."""

from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query

from app.api.deps import AdminUser, CurrentUser, RunnerDep
from app.models.common import Page, utcnow
from app.models.dashboard import ActiveJob
from app.models.job import JobFilter, JobOut
from app.services.catalog import queries as catalog
from app.services.catalog.status import active_jobs
from app.services.jobs import cancel as job_cancel

router = APIRouter(prefix="/api/backups/jobs", tags=["jobs"])
# A cancelled job ends within a heartbeat or two, plus the handler's cleanup.
CANCEL_WAIT_SECONDS = 30.0


@router.get("", response_model=Page[JobOut])
async def list_jobs(filters: Annotated[JobFilter, Query()], _: CurrentUser) -> Page[JobOut]:
    """Jobs, newest first, filtered by status, kind and source."""
    return await catalog.list_jobs(filters)


@router.get("/active", response_model=list[ActiveJob])
async def list_active_jobs(_: CurrentUser) -> list[ActiveJob]:
    """Queued and running jobs with live progress (rate, ETA): cheap enough to poll."""
    return await active_jobs(utcnow())


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: PydanticObjectId, _: CurrentUser) -> JobOut:
    """One job with its progress."""
    return catalog.job_out(await catalog.get_job(job_id))


@router.post("/{job_id}/cancel", response_model=JobOut)
async def cancel_job(job_id: PydanticObjectId, user: AdminUser, runner: RunnerDep,
                     wait: Annotated[bool, Query(description="answer when it has ended")] = False
                     ) -> JobOut:
    """Cancel a queued or running job (admin); it ends failed, "cancelled by <user>"."""
    job = await job_cancel.cancel_job(runner, job_id, user.username)
    if wait:
        assert job.id is not None
        job = await runner.wait(job.id, CANCEL_WAIT_SECONDS)
    return catalog.job_out(job)
