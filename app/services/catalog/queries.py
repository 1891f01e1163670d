"""Catalog queries: backups and jobs, filtered and paginated."""

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TypeVar

from beanie import Document, PydanticObjectId, SortDirection
from pydantic import ValidationError
from pymongo.errors import ExecutionTimeout

from app.errors import InvalidInputError, NotFoundError
from app.models.backup import Backup, BackupFilter, BackupOut, BackupStatus
from app.models.common import ApiSchema, Page, utcnow
from app.models.job import BackupJob, JobFilter, JobOut
from app.services.catalog.db import CatalogBusyError, SharedReads

D = TypeVar("D", bound=Document)
S = TypeVar("S", bound=ApiSchema)

NEWEST_FIRST = [("createdAt", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)]


# A server without usable indexes (FerretDB v1 scans the whole collection for any filter
# or sort) makes each page a full scan: few at once, identical ones shared, bounded time.
LIST_READS = SharedReads(slots=4, wait_seconds=30.0)
LIST_MAX_TIME_MS = 60_000


def _projection(schema: type[ApiSchema]) -> dict[str, int]:
    """The stored fields an API schema shows (stored names are its camelCase aliases)."""
    fields = {(f.alias or name): 1 for name, f in schema.model_fields.items()}
    fields.pop("id", None)
    return {"_id": 1, **fields}


def _out(model: type[D], schema: type[S], raw: dict[str, Any]) -> S:
    """One validation, straight into the API schema; through the document (its defaults
    and coercions) only for a record an older version or a person wrote incompletely."""
    try:
        return schema.model_validate({**raw, "id": raw["_id"]})
    except ValidationError:
        return schema.model_validate(model.model_validate(raw))


async def _fetch_page(model: type[D], schema: type[S], query: dict[str, Any], page: int,
                      limit: int, finish: Callable[[S], S]) -> tuple[int, list[S]]:
    collection = model.get_pymongo_collection()
    cursor = collection.find(query, _projection(schema), sort=NEWEST_FIRST,
                             skip=(page - 1) * limit, limit=limit, max_time_ms=LIST_MAX_TIME_MS)
    try:
        # Both at once: on a scanning server they cost one scan each.
        total, raws = await asyncio.gather(
            collection.count_documents(query, maxTimeMS=LIST_MAX_TIME_MS), cursor.to_list())
    except ExecutionTimeout as exc:
        raise CatalogBusyError("The catalog did not answer the list in time") from exc
    return total, [finish(_out(model, schema, raw)) for raw in raws]


async def _page(model: type[D], schema: type[S], query: dict[str, Any], page: int, limit: int,
                finish: Callable[[S], S] = lambda out: out) -> Page[S]:
    key = (model.get_collection_name(), json.dumps(query, sort_keys=True, default=str),
           page, limit)
    total, items = await LIST_READS.read(
        key, lambda: _fetch_page(model, schema, query, page, limit, finish))
    return Page[S](items=items, page=page, limit=limit,
                   total=total, pages=math.ceil(total / limit) if total else 0)


def equal_to(**fields: str | None) -> dict[str, Any]:
    """Equality conditions for the filters that were given (enums are str)."""
    return {name: str(value) for name, value in fields.items() if value is not None}


def backup_query(f: BackupFilter) -> dict[str, Any]:
    query: dict[str, Any] = equal_to(status=f.status, type=f.type, source=f.source)
    if f.status is None:
        # The trash is shown only when asked for (status=deleted).
        query["status"] = {"$ne": BackupStatus.deleted.value}
    return query | time_range("createdAt", f.from_, f.to)


def time_range(field: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """The condition of a `from`/`to` filter on a time field (none when both are open)."""
    if start and end and start > end:
        raise InvalidInputError("'from' must not be after 'to'",
                                [{"field": "from", "message": "must not be after 'to'"}])
    bounds = {op: value for op, value in (("$gte", start), ("$lte", end)) if value}
    return {field: bounds} if bounds else {}


async def list_backups(f: BackupFilter) -> Page[BackupOut]:
    """Backups matching the filters, newest first."""
    return await _page(Backup, BackupOut, backup_query(f), f.page, f.limit)


async def get_backup(backup_id: PydanticObjectId) -> Backup:
    backup = await Backup.get(backup_id)
    if backup is None:
        raise NotFoundError(f"Backup {backup_id} not found")
    return backup


def _with_duration(out: JobOut) -> JobOut:
    if out.started_at and out.finished_at:
        out.duration_ms = int((out.finished_at - out.started_at).total_seconds() * 1000)
    return out


def job_out(job: BackupJob) -> JobOut:
    return _with_duration(JobOut.model_validate(job))


async def list_jobs(f: JobFilter) -> Page[JobOut]:
    """Jobs matching the filters, newest first."""
    query = equal_to(status=f.status, kind=f.kind, source=f.source)
    return await _page(BackupJob, JobOut, query, f.page, f.limit, _with_duration)


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
