"""Bodies of the requests that start work."""

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

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

    @model_validator(mode="after")
    def _one_mode(self) -> "DatabaseBackupCreate":
        if self.schema_only and self.data_only:
            raise ValueError("schemaOnly and dataOnly cannot both be set")
        return self


class RestoreRequest(ApiSchema):
    model_config = ConfigDict(extra="forbid")

    target_database: str | None = Field(default=None, min_length=1, max_length=63,
                                        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                                        description="default: the source's own database")
    drop_existing: bool = False
    dry_run: bool = False
    safety_backup: bool = Field(default=True, description="back up the target first")
