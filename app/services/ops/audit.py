"""The audit log: append-only records chained by SHA-256, listing, export, check, pruning.

Each record's `_id` is its sequence number and its `hash` covers every other stored field,
`prevHash` (the previous record's hash) included. Replicas append concurrently: an insert
of a sequence number another replica already took fails on the unique `_id`, and the
writer moves on to the next number. Within a replica, records are appended in batches by
one writer (group commit), so concurrent requests do not race each other. `audit_state`
holds two small documents: `head`, a hint of the newest record (so appending needs no
sort), and `anchor`, the newest pruned record, where the chain check starts.
"""

import asyncio
import csv
import hashlib
import io
import json
import math
import re
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.config import Settings
from app.errors import AppError
from app.models.audit import (
    AuditFilter,
    AuditOutcome,
    AuditRecord,
    AuditRecordOut,
    AuditState,
    ChainReport,
)
from app.models.common import Page, utcnow
from app.services.catalog.queries import time_range

log = structlog.get_logger(__name__)

GENESIS = "0" * 64
HEAD, ANCHOR = "head", "anchor"
APPEND_ATTEMPTS = 200  # each failed attempt means another record was appended meanwhile
CSV_COLUMNS = ["seq", "time", "userId", "username", "role", "action", "method", "path",
               "target", "client", "userAgent", "statusCode", "outcome", "requestId",
               "details", "prevHash", "hash"]


class AuditWriteError(AppError):
    status_code = 503
    code = "audit_unavailable"


def _records() -> Any:
    return AuditRecord.get_pymongo_collection()


def _state() -> Any:
    return AuditState.get_pymongo_collection()


def _canonical_time(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return value


def record_hash(doc: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every stored field except `hash`."""
    payload = {k: _canonical_time(v) for k, v in doc.items() if k != "hash"}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def audit_time(now: datetime | None = None) -> datetime:
    """Now, at the millisecond precision BSON stores (so the hash survives the round trip)."""
    now = now or utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def outcome_for(status_code: int) -> AuditOutcome:
    if 200 <= status_code < 400:
        return AuditOutcome.success
    if status_code in (401, 403, 429):
        return AuditOutcome.denied
    return AuditOutcome.failed


async def _head() -> tuple[int, str]:
    """The newest known (seq, hash): the head hint or the anchor, whichever is newer."""
    known = [(d["_id"], d.get("seq"), d.get("hash"))
             async for d in _state().find({"_id": {"$in": [HEAD, ANCHOR]}})]
    # A state document edited by hand is ignored rather than stopping every write.
    known = [k for k in known if isinstance(k[1], int) and isinstance(k[2], str)]
    if not any(name == HEAD for name, _, _ in known):
        # No hint yet (new log, or lost): look once at the newest record.
        newest = await _records().find_one({}, {"hash": 1}, sort=[("_id", -1)])
        if newest is not None and isinstance(newest["_id"], int):
            known.append((HEAD, newest["_id"], str(newest.get("hash"))))
    if not known:
        return 0, GENESIS
    _, seq, digest = max(known, key=lambda k: int(k[1]))
    return int(seq), str(digest)


async def _advance_head(seq: int, digest: str) -> None:
    try:
        # `$not $gte` also matches a hint damaged by hand (not a number), which is repaired.
        await _state().update_one({"_id": HEAD, "seq": {"$not": {"$gte": seq}}},
                                  {"$set": {"seq": seq, "hash": digest, "time": utcnow()}},
                                  upsert=True)
    except DuplicateKeyError:
        pass  # a newer head is already stored


def _chained(entries: list[dict[str, Any]], seq: int, prev: str) -> list[dict[str, Any]]:
    docs = []
    for entry in entries:
        seq += 1
        doc = {"_id": seq, **entry, "prevHash": prev}
        doc["hash"] = prev = record_hash(doc)
        docs.append(doc)
    return docs


async def _insert_chained(entries: list[dict[str, Any]]) -> list[int]:
    """Insert records in order after the newest one; their seqs. When another replica took a
    seq meanwhile, the records not yet stored are chained after its record and tried again."""
    seqs: list[int] = []
    seq, prev = await _head()
    for _ in range(APPEND_ATTEMPTS):
        docs = _chained(entries, seq, prev)
        try:
            await _records().insert_many(docs, ordered=True)
            stored = len(docs)
        except BulkWriteError as exc:
            stored = int(exc.details.get("nInserted", 0))
        except DuplicateKeyError:
            stored = 0
        if stored:
            seq, prev = docs[stored - 1]["_id"], docs[stored - 1]["hash"]
            seqs += [d["_id"] for d in docs[:stored]]
            await _advance_head(seq, prev)
        entries = entries[stored:]
        if not entries:
            return seqs
        taken = await _records().find_one({"_id": seq + 1}, {"hash": 1})
        # Chain onto whatever is there; a damaged record is reported by the check.
        seq, prev = (seq + 1, str(taken.get("hash"))) if taken else await _head()
    raise AuditWriteError(f"audit record not appended after {APPEND_ATTEMPTS} attempts")


@dataclass
class _GroupWriter:
    """One writer per event loop: requests that finish together are appended in one batch
    (group commit), so they never race each other for the next seq; only other replicas
    can, and a batch recovers from that in one more round trip."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[tuple[dict[str, Any], asyncio.Future[int]]] = field(default_factory=list)

    async def append(self, entry: dict[str, Any]) -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append((entry, done))
        async with self.lock:
            if not done.done():
                batch, self.pending = self.pending, []
                try:
                    seqs = await _insert_chained([e for e, _ in batch])
                except BaseException as exc:
                    # Cancelled or failed: every waiter of the batch learns it now.
                    failure = exc if isinstance(exc, Exception) else AuditWriteError(
                        "the audit writer was stopped")
                    for _, waiter in batch:
                        waiter.set_exception(failure)
                    if not isinstance(exc, Exception):
                        done.exception()  # retrieved here; the cancellation goes on
                        raise
                else:
                    for (_, waiter), seq in zip(batch, seqs, strict=True):
                        waiter.set_result(seq)
        return await done


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupWriter]" = (
    weakref.WeakKeyDictionary())


async def append(entry: dict[str, Any]) -> int:
    """Append one record (stored field names, without `_id`, `prevHash`, `hash`); its seq."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = _GroupWriter()
    return await writer.append(entry)


def audit_query(f: AuditFilter) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if f.user:
        query["$or"] = [{"username": f.user}, {"userId": f.user}]
    if f.action:
        query["action"] = {"$regex": re.escape(f.action), "$options": "i"}
    if f.outcome:
        query["outcome"] = f.outcome.value
    return query | time_range("time", f.from_, f.to)


# What a record lacks (written by hand or by an older version) is shown empty: one odd
# record must not stop listing or exporting the log (the chain check reports it).
MISSING: dict[str, Any] = {
    "userId": None, "username": None, "role": None, "action": "", "method": "", "path": "",
    "target": {}, "client": None, "userAgent": None, "statusCode": 0,
    "outcome": AuditOutcome.failed.value, "requestId": None, "details": {}, "prevHash": "",
    "hash": ""}


def record_out(doc: dict[str, Any]) -> AuditRecordOut:
    return AuditRecordOut.model_validate({**MISSING, **doc, "seq": doc["_id"]})


async def list_records(f: AuditFilter) -> Page[AuditRecordOut]:
    """Records matching the filters, newest first."""
    query = audit_query(f)
    total = await _records().count_documents(query)
    cursor = _records().find(query).sort("_id", -1).skip((f.page - 1) * f.limit).limit(f.limit)
    items = [record_out(doc) async for doc in cursor]
    return Page[AuditRecordOut](items=items, page=f.page, limit=f.limit, total=total,
                                pages=math.ceil(total / f.limit) if total else 0)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    # A spreadsheet would run a cell starting like a formula (a user agent is user input).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_line(row: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue().encode()


async def export_records(query: dict[str, Any], fmt: str) -> AsyncIterator[bytes]:
    """The records matching an `audit_query`, oldest first, as JSON lines or CSV rows."""
    if fmt == "csv":
        yield _csv_line(CSV_COLUMNS)
    async for doc in _records().find(query).sort("_id", 1):
        record = record_out(doc)
        if fmt == "csv":
            data = record.model_dump(by_alias=True)
            yield _csv_line([_csv_cell(data[c]) for c in CSV_COLUMNS])
        else:
            yield record.model_dump_json(by_alias=True).encode() + b"\n"


def link_problem(doc: dict[str, Any], expected_seq: int, prev: str) -> str | None:
    """Why this record does not continue the chain at `expected_seq`, or None."""
    seq = doc.get("_id")
    if not isinstance(seq, int):
        return f"a record has a non-numeric sequence number {seq!r}"
    if seq < expected_seq:
        return (f"record {seq} is at or before the pruning anchor (seq {expected_seq - 1}): "
                "it was re-inserted or the anchor was moved")
    if seq > expected_seq:
        gap = (str(expected_seq) if seq == expected_seq + 1
               else f"{expected_seq} to {seq - 1}")
        return f"record {gap} is missing: the log jumps from {expected_seq - 1} to {seq}"
    if record_hash(doc) != doc.get("hash"):
        return f"record {seq} was altered: its content does not match its hash"
    if doc.get("prevHash") != prev:
        return (f"record {seq} does not follow record {seq - 1}: its prevHash differs from "
                f"that record's hash (record {seq - 1} was altered or replaced)")
    return None


def _start(anchor: dict[str, Any] | None) -> tuple[int | None, str]:
    """Where the chain starts: the anchor's seq and hash, or before record 1."""
    if anchor is None:
        return None, GENESIS
    seq = anchor.get("seq")
    # A damaged anchor (not a number) starts the check at 0, so every record is reported.
    return (seq if isinstance(seq, int) else 0), str(anchor.get("hash"))


@dataclass
class _Walk:
    first: int | None = None
    last: int | None = None
    last_hash: str | None = None
    checked: int = 0


async def _verify_once() -> ChainReport:
    anchor = await _state().find_one({"_id": ANCHOR})
    head = await _state().find_one({"_id": HEAD})
    anchor_seq, prev = _start(anchor)
    head_seq = head.get("seq") if head else None
    expected = (anchor_seq or 0) + 1
    walk = _Walk()

    def report(message: str, broken: int | None) -> ChainReport:
        return ChainReport(ok=broken is None, checked=walk.checked, first_seq=walk.first,
                           last_seq=walk.last, last_hash=walk.last_hash,
                           anchor_seq=anchor_seq, broken_seq=broken, message=message)

    async for doc in _records().find({}).sort("_id", 1):
        problem = link_problem(doc, expected, prev)
        if problem is not None:
            seq = doc.get("_id")
            return report(problem, min(seq, expected) if isinstance(seq, int) else expected)
        walk.first = expected if walk.first is None else walk.first
        walk.last, walk.last_hash, prev = expected, doc["hash"], doc["hash"]
        walk.checked += 1
        expected += 1
    if isinstance(head_seq, int) and head_seq >= expected:
        return report(f"records {expected} to {head_seq} are missing at the end: the "
                      f"newest record written was {head_seq}", expected)
    return report(f"{walk.checked} records verified", None)


async def verify_chain() -> ChainReport:
    """Walk the records in order, recompute each hash and link; the first break, if any."""
    anchor_before = await _state().find_one({"_id": ANCHOR})
    result = await _verify_once()
    if not result.ok and await _state().find_one({"_id": ANCHOR}) != anchor_before:
        result = await _verify_once()  # pruned while we read: look again
    return result


async def _move_anchor(seq: int, digest: str, time: datetime) -> None:
    """Set the anchor to `seq` unless a concurrent pruning already went further."""
    for _ in range(10):
        anchor = await _state().find_one({"_id": ANCHOR})
        if anchor is not None and isinstance(anchor.get("seq"), int) and anchor["seq"] >= seq:
            return
        fields = {"seq": seq, "hash": digest, "time": time}
        try:
            if anchor is None:
                await _state().insert_one({"_id": ANCHOR, **fields})
                return
            moved = await _state().update_one({"_id": ANCHOR, "seq": anchor["seq"]},
                                              {"$set": fields})
            if moved.matched_count:
                return
        except DuplicateKeyError:
            continue
    raise AuditWriteError("audit anchor not moved: too many concurrent prunings")


async def prune_audit(settings: Settings, now: datetime | None = None) -> int:
    """Delete the records older than `audit.retention_days` from the start of the chain.

    The anchor is moved before anything is deleted, so the check still verifies from it.
    Pruning stops before a broken link: evidence of tampering is never pruned away.
    """
    cutoff = (now or utcnow()) - timedelta(days=settings.audit.retention_days)
    anchor = await _state().find_one({"_id": ANCHOR})
    anchor_seq, prev = _start(anchor)
    expected = (anchor_seq or 0) + 1
    last: dict[str, Any] | None = None
    async for doc in _records().find({}).sort("_id", 1):
        time = doc.get("time")
        if not isinstance(time, datetime) or _canonical_time(time) >= _canonical_time(cutoff):
            break
        problem = link_problem(doc, expected, prev)
        if problem is not None:
            log.error("audit chain broken; not pruning past it", problem=problem)
            break
        last, expected, prev = doc, expected + 1, doc["hash"]
    if last is None:
        return 0
    await _move_anchor(int(last["_id"]), str(last["hash"]), last["time"])
    result = await _records().delete_many({"_id": {"$lte": last["_id"]}})
    deleted = int(result.deleted_count)
    log.info("audit records pruned", deleted=deleted, through_seq=last["_id"],
             retention_days=settings.audit.retention_days)
    return deleted
