"""The catalog itself: rebuild it from the manifests on storage."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import ConfigDict, Field

from app.api.deps import RunnerDep, SuperUser
from app.models.common import ApiSchema
from app.models.job import JobOut
from app.services.catalog import queries as catalog
from app.services.jobs import submit

router = APIRouter(prefix="/api/catalog", tags=["catalog"])


class RebuildRequest(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(default=False, description="report what would be recreated; "
                                                     "write nothing")


@router.post("/rebuild", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
async def rebuild_catalog(user: SuperUser, runner: RunnerDep, response: Response,
                          body: RebuildRequest | None = None,
                          wait: Annotated[bool, Query(description="answer when done")] = False
                          ) -> JobOut:
    """Recreate missing backup records, content items and objects from every storage
    target's manifests (superadmin); a job whose result lists recreated, skipped and
    unreadable manifests."""
    job = await submit.submit_catalog_rebuild(runner, (body or RebuildRequest()).dry_run,
                                              user.id)
    if wait:
        assert job.id is not None
        job = await runner.wait(job.id, runner.settings.limits.timeout_seconds)
        response.status_code = status.HTTP_200_OK
    return catalog.job_out(job)
