"""Open endpoints: liveness, readiness and Prometheus metrics."""

import time
from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.openapi import ErrorBody
from app.models.common import ApiSchema
from app.services.ops.metrics import catalog_metrics
from app.services.ops.readiness import NotReadyError, readiness

router = APIRouter(tags=["system"])

STARTED = time.monotonic()


class HealthOut(ApiSchema):
    status: Literal["ok"] = "ok"
    uptime_seconds: float
    replica: str | None


class ReadyOut(ApiSchema):
    status: Literal["ready"] = "ready"
    catalog: Literal["up"] = "up"
    storage: Literal["up"] = "up"


@router.get("/healthz", response_model=HealthOut)
async def healthz(request: Request) -> HealthOut:
    """Liveness: the process answers. Touches neither the catalog nor the storage."""
    runner = getattr(request.app.state, "runner", None)
    return HealthOut(uptime_seconds=round(time.monotonic() - STARTED, 3),
                     replica=getattr(runner, "replica_id", None))


@router.get("/readyz", response_model=ReadyOut, responses={503: {
    "model": ErrorBody,
    "description": "The catalog or the storage did not answer in time; `details` says which"}})
async def readyz(request: Request) -> ReadyOut:
    """Readiness: the catalog answers a ping and the storage a cheap check (2 s each)."""
    state = request.app.state
    checks = await readiness(state.mongo, state.runner.targets)
    if not checks["ready"]:
        raise NotReadyError(checks)
    return ReadyOut()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Process metrics, then the catalog's `backvault_*` series (at most 10 s old)."""
    state = request.app.state
    catalog = await catalog_metrics(state.settings, state.runner.targets)
    return Response(generate_latest() + catalog, media_type=CONTENT_TYPE_LATEST)
