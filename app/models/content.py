"""Content backups: objects stored once by content address, and each backup's items."""

from datetime import datetime
from enum import StrEnum

from beanie import Document, PydanticObjectId
from pydantic import ConfigDict, Field
from pymongo import ASCENDING, IndexModel

from app.config import ContentType
from app.models.backup import Notes, RetentionDays
from app.models.common import ApiSchema, document_alias, utcnow


class ContentObject(Document):
    """One stored piece of content, named by what it is: an IPFS CID or a SHA-256."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    # The address is the key: "ipfs:<cid>" or "gaia:<sha256>" (lookups by _id are also
    # the only ones FerretDB answers from an index).
    id: str  # type: ignore[assignment]
    type: ContentType
    storage_key: str
    format_chain: list[str]
    size: int  # plaintext bytes (the CAR, or the file)
    stored_bytes: int
    sha256: str  # of the stored bytes
    blocks: int | None = None
    kind: str | None = None  # UnixFS kind of an IPFS root: file, directory, ...
    children: list[str] = []  # addresses of a directory's entries (stored separately)
    etag: str | None = None
    # Where it was written, as on a Backup: the target when named targets are configured,
    # else only the backend (kind); neither on older records, which mean the default.
    storage_target: str | None = None
    storage_backend: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime = Field(default_factory=utcnow)

    @property
    def address(self) -> str:
        return self.id

    class Settings:
        name = "content_objects"


class GaiaUrlState(Document):
    """The last stored version of a Gaia URL: unchanged ETag, nothing to fetch."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    id: str  # type: ignore[assignment]  # the URL
    etag: str
    address: str
    checked_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "gaia_urls"


class ItemStatus(StrEnum):
    new = "new"  # fetched, verified and stored by this backup
    existing = "existing"  # already stored: referenced, not fetched again
    failed = "failed"


class ContentItem(Document):
    """One item of one content backup: where it came from and what it is stored as."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    backup_id: PydanticObjectId
    source: str
    type: ContentType
    reference: str  # the CID or URL as found
    origin: str | None = None  # e.g. the document id it was read from
    path: str | None = None  # Gaia: `address/path` under the hub's read prefix
    address: str | None = None
    objects: list[str] = []  # every address it needs (a directory's entries too)
    status: ItemStatus
    size: int | None = None
    sha256: str | None = None
    etag: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "content_items"
        indexes = [IndexModel([("backupId", ASCENDING)]), IndexModel([("objects", ASCENDING)])]


class ContentBackupCreate(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=63, description="a configured content source")
    notes: Notes = None
    retention_days: RetentionDays | None = None


class FullBackupCreate(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] | None = Field(default=None, max_length=100,
                                      description="database sources; default all")
    content_sources: list[str] | None = Field(default=None, max_length=100,
                                              description="content sources; default all")
    notes: Notes = None
    retention_days: RetentionDays | None = None


class ContentImportRequest(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    pin: bool = Field(default=True, description="pin each imported root")


class ContentItemOut(ApiSchema):
    source: str
    type: ContentType
    reference: str
    origin: str | None
    path: str | None
    address: str | None
    objects: list[str]
    status: ItemStatus
    size: int | None
    sha256: str | None
    error: str | None
