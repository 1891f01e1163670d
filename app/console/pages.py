"""Console pages over the JSON API: backups, jobs, schedules, sources, users, audit.

Reads go through the API in process (app/console/api.py); actions are sent by the
browser to the API itself, with the session cookie and the CSRF header.
"""

import asyncio
from typing import Annotated, Any

from beanie import PydanticObjectId
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.console.api import ApiAnswer, api_get
from app.console.web import SessionDep, render
from app.models.backup import BackupStatus, BackupType
from app.models.job import JobKind, JobStatus

router = APIRouter(include_in_schema=False)
Text = Annotated[str | None, Query(max_length=100)]
PageNo = Annotated[int, Query(ge=1, le=100_000)]
BACKUP_CHOICES = {"status": [s.value for s in BackupStatus],
                  "type": [t.value for t in BackupType]}
JOB_CHOICES = {"status": [s.value for s in JobStatus], "kind": [k.value for k in JobKind]}


@router.get("/backups")
async def backups_page(request: Request, session: SessionDep, page: PageNo = 1,
                       status: Text = None, type: Text = None, source: Text = None,
                       from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
                       to: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    filters = {"status": status, "type": type, "source": source, "from": from_, "to": to}
    listing = await api_get(request, session.token, "/api/backups",
                            {"page": page, "limit": 20, **filters})
    return render(request, "backups.html", session, nav="backups", listing=listing,
                  filters=filters, choices=BACKUP_CHOICES)


@router.get("/backups/{backup_id}")
async def backup_page(request: Request, session: SessionDep,
                      backup_id: PydanticObjectId) -> Response:
    backup = await api_get(request, session.token, f"/api/backups/{backup_id}")
    manifest: ApiAnswer | None = None
    items: ApiAnswer | None = None
    history: ApiAnswer | None = None
    if backup.ok:
        manifest, history = await asyncio.gather(
            api_get(request, session.token, f"/api/backups/{backup_id}/manifest"),
            api_get(request, session.token, f"/api/backups/{backup_id}/verifications",
                    {"limit": 20}))
        if backup.data.get("kind") == "content":
            items = await api_get(request, session.token, f"/api/backups/{backup_id}/items",
                                  {"limit": 200})
    response = render(request, "backup.html", session, nav="backups", backup=backup,
                      manifest=manifest, items=items, history=history)
    if not backup.ok:
        response.status_code = backup.status
    return response


@router.get("/jobs")
async def jobs_page(request: Request, session: SessionDep, page: PageNo = 1,
                    status: Text = None, kind: Text = None) -> Response:
    listing = await api_get(request, session.token, "/api/backups/jobs",
                            {"page": page, "limit": 20, "status": status, "kind": kind})
    return render(request, "jobs.html", session, nav="jobs", listing=listing,
                  filters={"status": status, "kind": kind}, choices=JOB_CHOICES)


async def _job_context(request: Request, session: SessionDep,
                       job_id: PydanticObjectId) -> dict[str, Any]:
    job = await api_get(request, session.token, f"/api/backups/jobs/{job_id}")
    live: dict[str, Any] | None = None
    if job.ok and job.data["status"] in ("queued", "running"):
        active = await api_get(request, session.token, "/api/backups/jobs/active")
        if active.ok:
            live = next((j for j in active.data if j["id"] == str(job_id)), None)
    return {"job": job, "live": live}


@router.get("/jobs/{job_id}")
async def job_page(request: Request, session: SessionDep, job_id: PydanticObjectId) -> Response:
    context = await _job_context(request, session, job_id)
    response = render(request, "job.html", session, nav="jobs", **context)
    if not context["job"].ok:
        response.status_code = context["job"].status
    return response


@router.get("/partials/jobs/{job_id}")
async def job_partial(request: Request, session: SessionDep,
                      job_id: PydanticObjectId) -> Response:
    return render(request, "_job.html", session, **await _job_context(request, session, job_id))


@router.get("/schedules")
async def schedules_page(request: Request, session: SessionDep) -> Response:
    listing = await api_get(request, session.token, "/api/backups/schedule/status")
    return render(request, "schedules.html", session, nav="schedules", listing=listing)


@router.get("/schedules/{schedule_id}")
async def schedule_page(request: Request, session: SessionDep,
                        schedule_id: PydanticObjectId) -> Response:
    schedule = await api_get(request, session.token, f"/api/schedules/{schedule_id}")
    response = render(request, "schedule.html", session, nav="schedules", schedule=schedule)
    if not schedule.ok:
        response.status_code = schedule.status
    return response


@router.get("/sources")
async def sources_page(request: Request, session: SessionDep) -> Response:
    sources, managed, pitr = await asyncio.gather(
        api_get(request, session.token, "/api/sources"),
        api_get(request, session.token, "/api/sources/managed"),
        api_get(request, session.token, "/api/pitr"))
    return render(request, "sources.html", session, nav="sources", sources=sources,
                  managed=managed, pitr=pitr)


@router.get("/users")
async def users_page(request: Request, session: SessionDep) -> Response:
    users = await api_get(request, session.token, "/api/auth/users")
    return render(request, "users.html", session, nav="users", users=users)


@router.get("/audit")
async def audit_page(request: Request, session: SessionDep, page: PageNo = 1,
                     action: Text = None, user: Text = None) -> Response:
    listing = await api_get(request, session.token, "/api/audit",
                            {"page": page, "limit": 50, "action": action, "user": user})
    return render(request, "audit.html", session, nav="audit", listing=listing,
                  filters={"action": action, "user": user})
