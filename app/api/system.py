"""Open endpoints: liveness and Prometheus metrics."""

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.services.catalog_db import ping_catalog

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz(request: Request) -> Any:
    """Liveness and catalog reachability; 503 when the catalog does not answer."""
    ok = await ping_catalog(request.app.state.mongo)
    body = {"status": "ok" if ok else "degraded", "catalog": "up" if ok else "down"}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
