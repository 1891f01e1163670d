"""The audit log: one hash-chained record per state-changing request or login attempt."""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from beanie import Document
from pydantic import ConfigDict, Field

from app.models.common import ApiSchema, document_alias


class AuditOutcome(StrEnum):
    success = "success"  # 2xx, 3xx
    denied = "denied"    # 401, 403, 429
    failed = "failed"    # anything else, and requests that raised


class AuditRecord(Document):
    """One entry; `id` is its sequence number, so each append is a unique `_id` insert.

    `hash` is SHA-256 over the canonical JSON of every other field (`prevHash` included):
    see app.services.audit.record_hash. Written with raw inserts, never updated.
    """

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    id: int  # type: ignore[assignment]
    v: int = 1
    time: datetime
    user_id: str | None = None
    username: str | None = None
    role: str | None = None
    action: str
    method: str
    path: str
    target: dict[str, str] = {}
    client: str | None = None
    user_agent: str | None = None
    status_code: int
    outcome: AuditOutcome
    request_id: str | None = None
    details: dict[str, Any] = {}
    prev_hash: str
    hash: str

    class Settings:
        name = "audit_log"


class AuditState(Document):
    """Chain bookkeeping: `head` (a hint: the newest seq and hash) and `anchor` (the seq and
    hash of the newest pruned record, where verification starts)."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    id: str  # type: ignore[assignment]
    seq: int
    hash: str
    time: datetime | None = None

    class Settings:
        name = "audit_state"


class AuditFilter(ApiSchema):
    """Query filters of the audit list and export."""

    page: int = Field(default=1, ge=1, le=100_000)
    limit: int = Field(default=50, ge=1, le=500)
    user: str | None = Field(default=None, max_length=64, description="username or user id")
    action: str | None = Field(default=None, max_length=200,
                               description="substring of the action, case-insensitive")
    outcome: AuditOutcome | None = None
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None


class AuditExportFilter(AuditFilter):
    format: Literal["jsonl", "csv"] = "jsonl"


class AuditRecordOut(ApiSchema):
    seq: int
    time: datetime
    user_id: str | None
    username: str | None
    role: str | None
    action: str
    method: str
    path: str
    target: dict[str, str]
    client: str | None
    user_agent: str | None
    status_code: int
    outcome: AuditOutcome
    request_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class ChainReport(ApiSchema):
    ok: bool
    checked: int = Field(description="records checked")
    first_seq: int | None = Field(description="first record checked")
    last_seq: int | None = Field(description="newest record: note it with last_hash elsewhere "
                                             "to detect a rewrite of the whole tail")
    last_hash: str | None
    anchor_seq: int | None = Field(description="newest pruned record, where the chain starts")
    broken_seq: int | None = Field(description="first record where the chain breaks")
    message: str


AUDIT_MODELS: list[type[Document]] = [AuditRecord, AuditState]
