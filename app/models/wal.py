"""WalSegment: one archived WAL segment (or timeline history file) of a PITR source."""

from datetime import datetime
from enum import StrEnum

from beanie import Document
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymongo import ASCENDING, IndexModel

from app.models.common import ApiSchema, document_alias, utcnow
from app.models.requests import DatabaseName


class WalSegment(Document):
    """`_id` is `<source>:<file name>`; a partial copy is `<source>:<segment>.partial`."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    id: str  # type: ignore[assignment]
    source: str
    timeline: int
    segment: str  # the WAL file name (24 hex digits, or TTTTTTTT.history)
    start_lsn: int | None = None  # byte positions; None for a history file
    end_lsn: int | None = None
    size: int = Field(default=0, ge=0)  # plaintext bytes received
    stored_bytes: int = Field(default=0, ge=0)
    sha256: str
    storage_target: str
    key: str
    format_chain: list[str] = []
    archived_at: datetime = Field(default_factory=utcnow)
    partial: bool = False
    history: bool = False

    class Settings:
        name = "wal_segments"
        indexes = [IndexModel([("source", ASCENDING), ("segment", ASCENDING)])]


class WalFacts(BaseModel):
    """What continuity reads of a WalSegment, through a projection: the window of a source
    with a week of WAL reads tens of thousands of records."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    timeline: int
    segment: str
    start_lsn: int | None = None
    end_lsn: int | None = None
    stored_bytes: int = 0
    archived_at: datetime
    partial: bool = False
    history: bool = False


WAL_FACTS_PROJECTION = {document_alias(name): 1 for name in WalFacts.model_fields}


class WalSegmentOut(ApiSchema):
    source: str
    timeline: int
    segment: str
    start_lsn: str | None
    end_lsn: str | None
    size: int
    sha256: str
    storage_target: str
    key: str
    archived_at: datetime
    partial: bool


class PitrRestoreMode(StrEnum):
    inspect = "inspect"  # leave the private instance running, report port and data dir
    copy = "copy"  # copy one database from it into a target database, then stop it


class PitrRestoreRequest(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    target_time: datetime | None = Field(default=None, description="restore to this moment")
    target_lsn: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
    latest: bool = Field(default=False, description="replay every archived WAL record")
    dry_run: bool = True
    mode: PitrRestoreMode = PitrRestoreMode.inspect
    port: int | None = Field(default=None, ge=1024, le=65535,
                             description="the private instance's port; default a free one")
    database: DatabaseName | None = Field(
        default=None, description="copy mode: the database to copy; default the source's")
    target_database: DatabaseName | None = Field(
        default=None, description="copy mode: the new database on the source's server")
    confirm: str | None = Field(default=None, max_length=255,
                                description="copy mode: the target's name when it exists")

    @model_validator(mode="after")
    def _one_target(self) -> "PitrRestoreRequest":
        chosen = [self.target_time is not None, self.target_lsn is not None, self.latest]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of targetTime, targetLsn or latest")
        if self.target_time is not None and self.target_time.tzinfo is None:
            raise ValueError("targetTime needs a time zone (e.g. 2026-01-31T12:00:00Z)")
        if self.mode is PitrRestoreMode.copy and not self.target_database:
            raise ValueError("copy mode needs targetDatabase")
        return self

