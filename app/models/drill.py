"""RestoreDrill: one restore of a source's newest good backup into a scratch database."""

from datetime import datetime
from enum import StrEnum

from beanie import Document, PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.models.common import ApiSchema, document_alias, utcnow


class DrillResult(StrEnum):
    running = "running"
    passed = "passed"
    failed = "failed"


class DrillCheck(BaseModel):
    """One check of a drill: restore clean, a count against the manifest, a source check."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    name: str
    passed: bool
    detail: str | None = None


class RestoreDrill(Document):
    """Result, timings (RTO) and checks of one restore drill."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    source: str
    backup_id: PydanticObjectId | None = None
    job_id: PydanticObjectId | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    result: DrillResult = DrillResult.running
    # download + restore + checks, in seconds; None until the drill finished its phases.
    rto_s: float | None = None
    phases: dict[str, float] = {}
    rto_target_s: float | None = None
    over_target: bool = False
    failures: list[str] = []
    checks: list[DrillCheck] = []
    scratch_database: str | None = None
    # True when the scratch database was left in place (a failed drill with keep_failed).
    kept: bool = False
    # "database" (restored into a scratch database) or "content" (objects re-hashed).
    # "pitr": WAL and the newest base backup re-hashed, then a restore to the latest time.
    mode: str = "database"

    class Settings:
        name = "restore_drills"
        indexes = [
            IndexModel([("source", ASCENDING), ("startedAt", DESCENDING)]),
            IndexModel([("startedAt", DESCENDING)]),
        ]


class RestoreDrillOut(ApiSchema):
    id: PydanticObjectId
    source: str
    backup_id: PydanticObjectId | None
    job_id: PydanticObjectId | None
    started_at: datetime
    finished_at: datetime | None
    result: DrillResult
    rto_s: float | None
    phases: dict[str, float]
    rto_target_s: float | None
    over_target: bool
    failures: list[str]
    checks: list[DrillCheck]
    scratch_database: str | None
    kept: bool
    mode: str
