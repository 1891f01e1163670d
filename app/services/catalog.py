"""Catalog queries: backups and jobs, filtered and paginated."""

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from beanie import Document, PydanticObjectId, SortDirection

from app.errors import InvalidInputError, NotFoundError
from app.models.backup import Backup, BackupFilter, BackupOut
from app.models.common import ApiSchema, Page, utcnow
from app.models.job import BackupJob, JobFilter, JobOut

D = TypeVar("D", bound=Document)
S = TypeVar("S", bound=ApiSchema)

NEWEST_FIRST = [("createdAt", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)]


async def _page(model: type[D], convert: Callable[[D], S], query: dict[str, Any], page: int,
                limit: int) -> Page[S]:
    total = await model.find(query).count()
    docs = await (model.find(query).sort(NEWEST_FIRST).skip((page - 1) * limit)
                  .limit(limit).to_list())
    return Page[S](items=[convert(d) for d in docs], page=page, limit=limit,
                   total=total, pages=math.ceil(total / limit) if total else 0)


def equal_to(**fields: str | None) -> dict[str, Any]:
    """Equality conditions for the filters that were given (enums are str)."""
    return {name: str(value) for name, value in fields.items() if value is not None}


def backup_query(f: BackupFilter) -> dict[str, Any]:
    query = equal_to(status=f.status, type=f.type, source=f.source)
    if f.from_ and f.to and f.from_ > f.to:
        raise InvalidInputError("'from' must not be after 'to'",
                                [{"field": "from", "message": "must not be after 'to'"}])
    created: dict[str, Any] = {}
    if f.from_:
        created["$gte"] = f.from_
    if f.to:
        created["$lte"] = f.to
    if created:
        query["createdAt"] = created
    return query


async def list_backups(f: BackupFilter) -> Page[BackupOut]:
    """Backups matching the filters, newest first."""
    return await _page(Backup, BackupOut.model_validate, backup_query(f), f.page, f.limit)


async def get_backup(backup_id: PydanticObjectId) -> Backup:
    backup = await Backup.get(backup_id)
    if backup is None:
        raise NotFoundError(f"Backup {backup_id} not found")
    return backup


def job_out(job: BackupJob) -> JobOut:
    out = JobOut.model_validate(job)
    if job.started_at and job.finished_at:
        out.duration_ms = int((job.finished_at - job.started_at).total_seconds() * 1000)
    return out


async def list_jobs(f: JobFilter) -> Page[JobOut]:
    """Jobs matching the filters, newest first."""
    query = equal_to(status=f.status, kind=f.kind, source=f.source)
    return await _page(BackupJob, job_out, query, f.page, f.limit)


async def get_job(job_id: PydanticObjectId) -> BackupJob:
    job = await BackupJob.get(job_id)
    if job is None:
        raise NotFoundError(f"Job {job_id} not found")
    return job


async def export_backups(query: dict[str, Any]) -> AsyncIterator[bytes]:
    """The matching backup records as one JSON document, streamed record by record."""
    yield b'{"exportedAt": ' + json.dumps(utcnow().isoformat()).encode() + b', "backups": ['
    count = 0
    async for backup in Backup.find(query).sort(NEWEST_FIRST):
        body = BackupOut.model_validate(backup).model_dump_json(by_alias=True)
        yield (b", " if count else b"") + body.encode()
        count += 1
    yield b'], "count": ' + str(count).encode() + b"}"


async def update_backup(backup: Backup, *, only_if: dict[str, Any] | None = None,
                        **fields: Any) -> bool:
    """Apply fields to the document (validated) and store them in one atomic update,
    if the stored record still matches `only_if`; returns whether it did."""
    for name, value in fields.items():
        setattr(backup, name, value)
    backup.updated_at = utcnow()
    encoded = backup.model_dump(by_alias=True, include=set(fields) | {"updated_at"})
    result = await Backup.get_pymongo_collection().update_one(
        {"_id": backup.id, **(only_if or {})}, {"$set": encoded})
    return result.matched_count > 0
