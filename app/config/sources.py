"""What is backed up: database sources (the catalog among them) and content sources."""

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    HttpUrl,
    SecretStr,
    model_validator,
)

from app.config.common import Group, SourceName, empty_as_none, host_port
from app.services.databases.registry import facts_of, kind_facts

if TYPE_CHECKING:
    class SourceKind(StrEnum):
        """One member per kind of the database registry."""
else:
    SourceKind = StrEnum("SourceKind", [(f.name, f.name) for f in kind_facts()])


class CatalogSettings(Group):
    mongo_uri: SecretStr = SecretStr("mongodb://127.0.0.1:57017/")
    database: str = Field(default="backvault", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    # The service's own catalog database is backed up as a source of this name.
    source_name: Annotated[SourceName | None, BeforeValidator(empty_as_none)] = "catalog"


class SourceSettings(Group):
    name: SourceName
    kind: SourceKind
    uri: SecretStr
    database: str | None = None
    enabled: bool = True
    # Storage targets each backup of this source is copied to after it is written.
    copy_targets: list[str] = []

    @model_validator(mode="after")
    def _uri_matches_kind(self) -> "SourceSettings":
        scheme = urlsplit(self.uri.get_secret_value()).scheme
        allowed = facts_of(self.kind).uri_schemes
        if scheme not in allowed:
            raise ValueError(f"source {self.name!r}: a {self.kind} URI must start with "
                             f"{' or '.join(sorted(s + '://' for s in allowed))}")
        return self

    def server(self) -> str | None:
        """host[:port] of the source's server, never its credentials."""
        host, port = host_port(self.uri.get_secret_value())
        return None if host is None else f"{host}:{port}" if port else host

    def database_name(self) -> str:
        """The database to back up: explicit, else the URI's path."""
        if self.database:
            return self.database
        path = urlsplit(self.uri.get_secret_value()).path.lstrip("/")
        return path or facts_of(self.kind).default_database


class ContentSourceKind(StrEnum):
    mongo_query = "mongo_query"  # a field of the documents of an application collection
    static = "static"  # a fixed list
    kubo_pins = "kubo_pins"  # the recursive pins of a Kubo node


class ContentType(StrEnum):
    ipfs = "ipfs"
    gaia = "gaia"


class ContentSourceSettings(Group):
    name: SourceName
    kind: ContentSourceKind
    type: ContentType = ContentType.ipfs
    # mongo_query: a configured MongoDB source, its collection, a filter and the field
    # (dotted path) that holds a CID or a Gaia URL (or a list of them).
    mongo_source: str | None = None
    collection: str | None = None
    field: str | None = None
    filter: dict[str, Any] = {}
    items: list[str] = []  # static: CIDs, or Gaia URLs / "address/path"
    kubo_api: Annotated[HttpUrl | None, BeforeValidator(empty_as_none)] = None

    @model_validator(mode="after")
    def _complete(self) -> "ContentSourceSettings":
        needed = {ContentSourceKind.mongo_query: ("mongo_source", "collection", "field"),
                  ContentSourceKind.static: ("items",),
                  ContentSourceKind.kubo_pins: ("kubo_api",)}[self.kind]
        missing = [name for name in needed if not getattr(self, name)]
        if missing:
            raise ValueError(f"content source {self.name!r} ({self.kind}) needs "
                             + ", ".join(missing))
        if self.kind is ContentSourceKind.kubo_pins and self.type is not ContentType.ipfs:
            raise ValueError(f"content source {self.name!r}: Kubo pins are IPFS content")
        return self


class ContentSettings(Group):
    enabled: bool = True
    sources: list[ContentSourceSettings] = []
    concurrency: int = Field(default=3, ge=1, le=64)
    timeout_seconds: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    max_file_size: int = Field(default=100 * 1024 * 1024, ge=1)
    ipfs_gateways: list[HttpUrl] = []
    gaia_hubs: list[HttpUrl] = []
    # Where re-imported IPFS content goes (Kubo RPC API); empty: no re-import.
    kubo_api: Annotated[HttpUrl | None, BeforeValidator(empty_as_none)] = None
