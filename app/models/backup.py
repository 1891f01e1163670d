"""The Backup catalog record (seed 000) and the fields a real catalog needs."""

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from beanie import Document, PydanticObjectId
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.models.common import ApiSchema, document_alias, utcnow
from app.services.databases.registry import kind_facts


class BackupType(StrEnum):
    manual = "manual"
    automatic = "automatic"


class BackupStatus(StrEnum):
    pending = "pending"
    completed = "completed"
    failed = "failed"
    restored = "restored"
    # In the trash: the object and manifest are kept until retention empties it.
    deleted = "deleted"


# A backup that finished writing; "restored" ones were completed and then used.
GOOD_STATUSES = (BackupStatus.completed, BackupStatus.restored)


if TYPE_CHECKING:
    class BackupKind(StrEnum):
        """One member per database kind of the registry, and content."""

        content = "content"
else:
    BackupKind = StrEnum(
        "BackupKind", [*((f.name, f.name) for f in kind_facts()), ("content", "content")])


class VerificationState(StrEnum):
    unverified = "unverified"
    passed = "passed"
    failed = "failed"


def _lowered_choice(message: str, allowed: type[StrEnum], required: str | None = None) -> Any:
    def check(value: Any) -> Any:
        if value is None and required:
            raise PydanticCustomError("required", required)
        if isinstance(value, str):
            value = value.strip().lower()
        if value not in {m.value for m in allowed}:
            raise PydanticCustomError("enum", message)
        return value

    return BeforeValidator(check)


def _check_admin(value: PydanticObjectId | None) -> PydanticObjectId | None:
    if value is None:
        raise PydanticCustomError("required", "Please provide admin ID")
    return value


def _check_size(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise PydanticCustomError("size", "Size cannot be negative")
    return value


def _check_retention(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("required", "Please provide retention days")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 365:
        raise PydanticCustomError("retention", "Retention must be between 1 and 365 days")
    if int(value) != value:
        raise PydanticCustomError("retention", "Retention must be between 1 and 365 days")
    return int(value)


AdminId = Annotated[PydanticObjectId | None, AfterValidator(_check_admin)]
TypeField = Annotated[
    BackupType,
    _lowered_choice("Type must be manual or automatic", BackupType, "Please provide backup type"),
]
StatusField = Annotated[BackupStatus, _lowered_choice("Invalid backup status", BackupStatus)]
SizeMB = Annotated[float | None, AfterValidator(_check_size)]
RetentionDays = Annotated[int, BeforeValidator(_check_retention)]
Notes = Annotated[str | None, Field(max_length=2000)]


class ContentEntry(BaseModel):
    """One table or collection inside an artifact."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    name: str
    count: int | None = None
    bytes: int | None = None


class Verification(BaseModel):
    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    state: VerificationState = VerificationState.unverified
    checked_at: datetime | None = None
    deep: bool = False
    sha256_ok: bool | None = None
    size_ok: bool | None = None
    contents: list[ContentEntry] = []
    error: str | None = None


class BackupCopy(BaseModel):
    """A copy of the artifact and manifest on another storage target (same keys)."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    target: str
    sha256: str | None = None
    stored_bytes: int | None = None
    copied_at: datetime | None = None
    verification: Verification = Verification()


class Backup(Document):
    """One backup artifact and its catalog state."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True,
                              validate_assignment=True)

    # Seed fields and their validation messages.
    admin: AdminId = Field(default=None, validate_default=True)
    type: TypeField = BackupType.manual
    status: StatusField = BackupStatus.pending
    size_mb: SizeMB = Field(default=None, alias="sizeMB")
    retention_days: RetentionDays = 30
    notes: Notes = None
    restored_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    # What a real catalog needs besides.
    source: str | None = None
    kind: BackupKind | None = None
    job_id: PydanticObjectId | None = None
    storage_backend: str | None = None
    # The named storage target written to; None on older records (their backend names it).
    storage_target: str | None = None
    copies: list[BackupCopy] = []
    storage_key: str | None = None
    manifest_key: str | None = None
    format_chain: list[str] = []
    sha256: str | None = None
    stored_bytes: int | None = Field(default=None, ge=0)
    plaintext_bytes: int | None = Field(default=None, ge=0)
    duration_ms: int | None = Field(default=None, ge=0)
    server_version: str | None = None
    tool_version: str | None = None
    contents: list[ContentEntry] = []
    encrypted: bool = False
    recipients: list[str] = []
    options: dict[str, Any] = {}
    verification: Verification = Verification()
    error: str | None = None
    # The database the artifact holds (a restore's default target). A pre-restore safety
    # backup names the database it copied, which may not be its source's own.
    database: str | None = None
    # host[:port] of the server the dump came from (never credentials): a drill restores
    # onto the source's server only while the source still points there.
    server: str | None = None
    # Set on a pre-restore safety backup: the backup whose restore it preceded. Safety
    # backups never count as their source's backups for retention.
    safety_for: PydanticObjectId | None = None
    # Set before a deletion removes anything, so a run cut short is finished later.
    deleting_since: datetime | None = None
    deletion_reason: str | None = None
    # Trash: when, by whom (username) and from which status it was deleted.
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    status_before_delete: BackupStatus | None = None

    class Settings:
        name = "backups"
        # The list's sort is (createdAt, _id) descending: each filter it offers leads an
        # index that ends in that order, so MongoDB reads one page without sorting.
        indexes = [
            IndexModel([("admin", ASCENDING)]),
            IndexModel([("createdAt", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("status", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("type", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("source", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("jobId", ASCENDING)]),
        ]


class BackupOut(ApiSchema):
    id: PydanticObjectId
    admin: PydanticObjectId | None
    type: BackupType
    status: BackupStatus
    size_mb: float | None = Field(alias="sizeMB")
    retention_days: int
    notes: str | None
    restored_at: datetime | None
    created_at: datetime
    updated_at: datetime
    source: str | None
    kind: BackupKind | None
    job_id: PydanticObjectId | None
    storage_backend: str | None
    storage_target: str | None = None
    copies: list[BackupCopy] = []
    storage_key: str | None
    manifest_key: str | None
    format_chain: list[str]
    sha256: str | None
    stored_bytes: int | None
    plaintext_bytes: int | None
    duration_ms: int | None
    server_version: str | None
    tool_version: str | None
    contents: list[ContentEntry]
    encrypted: bool
    recipients: list[str]
    options: dict[str, Any]
    verification: Verification
    error: str | None
    deleting_since: datetime | None = None
    deletion_reason: str | None = None
    server: str | None = None
    database: str | None = None
    safety_for: PydanticObjectId | None = None
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    status_before_delete: BackupStatus | None = None


class BackupFilter(ApiSchema):
    """Query filters of the backup list."""

    page: int = Field(default=1, ge=1, le=100_000)
    limit: int = Field(default=20, ge=1, le=100)
    status: BackupStatus | None = None
    type: BackupType | None = None
    source: str | None = Field(default=None, max_length=63)
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None


class BackupExportRequest(ApiSchema):
    """Which catalog records to export; all when empty."""

    model_config = ConfigDict(extra="forbid")

    status: BackupStatus | None = None
    type: BackupType | None = None
    source: str | None = Field(default=None, max_length=63)
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
