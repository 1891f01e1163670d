"""BackupVerification: one record per verification of a backup (after backup, rolling, manual)."""

from datetime import datetime
from enum import StrEnum

from beanie import Document, PydanticObjectId
from pydantic import ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.models.common import ApiSchema, document_alias, utcnow


class VerificationKind(StrEnum):
    quick = "quick"  # size and SHA-256 read back from storage
    deep = "deep"  # also the inner format (decrypt, decompress, parse)


class VerificationResult(StrEnum):
    passed = "passed"
    failed = "failed"


class VerificationTrigger(StrEnum):
    after_backup = "after_backup"
    rolling = "rolling"
    manual = "manual"


class BackupVerification(Document):
    """What one verification of one backup found, and what it cost."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    backup_id: PydanticObjectId
    source: str
    kind: VerificationKind
    result: VerificationResult
    at: datetime = Field(default_factory=utcnow)
    duration_s: float = Field(default=0.0, ge=0)
    bytes_read: int = Field(default=0, ge=0)
    problems: list[str] = []
    trigger: VerificationTrigger = VerificationTrigger.manual
    # The storage target that was read (a backup's copies live on other targets).
    target: str | None = None
    job_id: PydanticObjectId | None = None

    class Settings:
        name = "backup_verifications"
        indexes = [
            IndexModel([("backupId", ASCENDING), ("at", DESCENDING)]),
            IndexModel([("source", ASCENDING), ("at", DESCENDING)]),
        ]


class BackupVerificationOut(ApiSchema):
    id: PydanticObjectId
    backup_id: PydanticObjectId
    source: str
    kind: VerificationKind
    result: VerificationResult
    at: datetime
    duration_s: float
    bytes_read: int
    problems: list[str]
    trigger: VerificationTrigger
    target: str | None = None
    job_id: PydanticObjectId | None = None
