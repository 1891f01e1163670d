"""Bodies of the requests that start work."""

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from app.models.backup import Notes, RetentionDays
from app.models.common import ApiSchema

Name = Annotated[str, Field(min_length=1, max_length=255)]


class DatabaseBackupCreate(ApiSchema):
    """Start a backup of one configured database source."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=63, description="a configured source name")
    schema_only: bool = False
    data_only: bool = False
    tables: list[Name] = Field(default=[], max_length=1000,
                               description="PostgreSQL: `table` or `schema.table`")
    collections: list[Name] = Field(default=[], max_length=1000, description="MongoDB")
    allow_partial: bool = Field(default=False, description="MongoDB: a collection that fails "
                                "is recorded instead of failing the backup")
    notes: Notes = None
    retention_days: RetentionDays | None = None
    copy_targets: list[Annotated[str, Field(max_length=63)]] = Field(
        default=[], max_length=16, description="storage targets to copy the backup to, "
                                               "besides the source's own copy targets")

    @model_validator(mode="after")
    def _one_mode(self) -> "DatabaseBackupCreate":
        if self.schema_only and self.data_only:
            raise ValueError("schemaOnly and dataOnly cannot both be set")
        return self


# Letters, digits, _ and -: valid for PostgreSQL and MongoDB alike (MongoDB refuses
# /\\. "$*<>:|? and NUL), and safe inside a connection URI's path.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
MAX_DATABASE_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; MongoDB's limit is 63 too


def _check_database_name(value: str) -> str:
    bad = sorted(set(value) - _NAME_CHARS)
    if bad:
        shown = ", ".join("NUL" if c == "\0" else repr(c) for c in bad)
        raise ValueError(f"a database name cannot hold {shown}; use letters, digits, _ and -")
    if len(value.encode()) > MAX_DATABASE_NAME_BYTES:
        raise ValueError(f"a database name has at most {MAX_DATABASE_NAME_BYTES} characters")
    if value.startswith("-"):
        raise ValueError("a database name cannot start with -")
    return value


DatabaseName = Annotated[str, Field(min_length=1, max_length=255),
                         AfterValidator(_check_database_name)]


class RestoreRequest(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    target_database: DatabaseName | None = Field(
        default=None, description="default: the database the backup holds")
    drop_existing: bool = False
    dry_run: bool = False
    safety_backup: bool = Field(default=True, description="back up the target first")
    confirm: str | None = Field(
        default=None, max_length=255,
        description="the target database's name; required when the restore drops, replaces "
                    "or adds to existing data")


class CleanupRequest(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(default=False, description="answer what would go and why; "
                                                     "delete nothing")
    source: str | None = Field(default=None, min_length=1, max_length=63,
                               description="only this source; default all")
