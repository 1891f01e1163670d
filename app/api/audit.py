"""The audit log (superadmin): list, export, chain check."""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.api.deps import SuperUser
from app.models.audit import AuditExportFilter, AuditFilter, AuditRecordOut, ChainReport
from app.models.common import Page, utcnow
from app.services.ops import audit

router = APIRouter(prefix="/api/audit", tags=["audit"])

MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


@router.get("", response_model=Page[AuditRecordOut])
async def list_audit(filters: Annotated[AuditFilter, Query()],
                     _: SuperUser) -> Page[AuditRecordOut]:
    """Audit records, newest first, filtered by user, action, outcome and time (superadmin)."""
    return await audit.list_records(filters)


@router.get("/export", responses={200: {"content": {
    "application/x-ndjson": {}, "text/csv": {}}, "description": "the records, oldest first"}})
async def export_audit(filters: Annotated[AuditExportFilter, Query()],
                       _: SuperUser) -> StreamingResponse:
    """The matching records as JSON lines or CSV, streamed, oldest first (superadmin)."""
    query = audit.audit_query(filters)  # a bad filter is a 422 before streaming starts
    name = f"audit-{utcnow():%Y%m%dT%H%M%SZ}.{filters.format}"
    return StreamingResponse(audit.export_records(query, filters.format),
                             media_type=MEDIA[filters.format],
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/verify", response_model=ChainReport)
async def verify_audit(_: SuperUser) -> ChainReport:
    """Check the hash chain: the first edited, deleted or re-linked record (superadmin)."""
    return await audit.verify_chain()
