"""Restore drills: run one now, list them with each source's RTO trend."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import ConfigDict, Field

from app.api.deps import AdminUser, CurrentUser, RunnerDep, SettingsDep
from app.models.common import ApiSchema
from app.models.job import JobOut
from app.services.catalog import queries as catalog
from app.services.recoverability.drills import DrillList, list_drills, submit_drill

router = APIRouter(prefix="/api/drills", tags=["drills"])


class DrillRequest(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, min_length=1, max_length=63,
                               description="one source; every source with a backup when "
                                           "left out")


@router.post("", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
async def run_drill(user: AdminUser, runner: RunnerDep, response: Response,
                    body: DrillRequest | None = None,
                    wait: Annotated[bool, Query(description="answer when done")] = False
                    ) -> JobOut:
    """Restore the newest good backup of one source (or all) into a scratch database,
    check it and record the RTO, as a job (admin); a PITR source is also restored to its
    latest moment in a private instance."""
    job = await submit_drill(runner, (body or DrillRequest()).source, user.id)
    if wait:
        assert job.id is not None
        job = await runner.wait(job.id, runner.settings.limits.timeout_seconds)
        response.status_code = status.HTTP_200_OK
    return catalog.job_out(job)


@router.get("", response_model=DrillList)
async def drills(settings: SettingsDep, _: CurrentUser,
                 source: Annotated[str | None, Query(min_length=1, max_length=63)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DrillList:
    """Drills, newest first, and each source's recent RTOs against its target."""
    return await list_drills(settings, source, limit)
