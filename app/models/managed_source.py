"""Database sources added at runtime: stored with their URI sealed, never returned."""

from datetime import datetime
from typing import Any

from beanie import Document
from pydantic import ConfigDict, Field, SecretStr, field_validator
from pymongo import ASCENDING, IndexModel

from app.config.common import SourceName
from app.config.sources import SourceKind
from app.models.common import ApiSchema, document_alias, utcnow


class ManagedSource(Document):
    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    name: SourceName
    kind: SourceKind
    # The URI encrypted to the source store's age key (armored); never leaves the service.
    sealed_uri: str
    database: str | None = None
    enabled: bool = True
    copy_targets: list[str] = []
    created_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "managed_sources"
        indexes = [IndexModel([("name", ASCENDING)], unique=True)]


class ManagedSourceCreate(ApiSchema):
    name: SourceName
    kind: SourceKind
    uri: SecretStr = Field(description="connection URI; stored encrypted, never returned")
    database: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,63}$")
    enabled: bool = True
    copy_targets: list[str] = []


class ManagedSourceUpdate(ApiSchema):
    """Fields left out stay as they are; `uri` replaces the stored one; `database: null`
    goes back to the URI's database."""

    uri: SecretStr | None = None
    database: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,63}$")
    enabled: bool | None = None
    copy_targets: list[str] | None = None

    @field_validator("uri", "enabled", "copy_targets", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null (leave the field out to keep its value)")
        return value


class ManagedSourceOut(ApiSchema):
    name: str
    kind: SourceKind
    host: str | None
    port: int | None
    database: str
    enabled: bool
    copy_targets: list[str]
    created_by: str | None
    created_at: datetime
    updated_at: datetime
