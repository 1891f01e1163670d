"""Typed parameters of each kind of job, stored on the job as camelCase keys."""

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from app.models.backup import BackupType, Notes, RetentionDays
from app.models.content import ContentBackupCreate, ContentImportRequest
from app.models.job import BackupJob, JobKind
from app.models.requests import CleanupRequest, DatabaseBackupCreate, RestoreRequest
from app.models.wal import PitrRestoreRequest


class JobParams(BaseModel):
    """Base of every kind's params: unknown keys refused, except the fire time a schedule
    adds to the jobs it queues."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    fire_time: datetime | None = None

    def stored(self) -> dict[str, Any]:
        """The shape kept in `BackupJob.params` (no fireTime key on unscheduled jobs)."""
        data = self.model_dump(mode="json", by_alias=True)
        if data.get("fireTime") is None:
            data.pop("fireTime", None)
        return data


class DatabaseParams(JobParams):
    request: DatabaseBackupCreate
    backup_type: BackupType = BackupType.manual


class ContentParams(JobParams):
    request: ContentBackupCreate
    backup_type: BackupType = BackupType.manual


class FullParams(JobParams):
    sources: list[str] = Field(max_length=100)
    content_sources: list[str] = Field(max_length=100)
    notes: Notes = None
    retention_days: RetentionDays | None = None


class VerifyParams(JobParams):
    pass


class RestoreParams(RestoreRequest, JobParams):
    # Jobs stored before params were typed hold snake_case keys; populate_by_name reads them.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CleanupParams(CleanupRequest, JobParams):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ReportParams(JobParams):
    """stats_report and health_check: nothing but a schedule's fire time."""


class ContentImportParams(ContentImportRequest, JobParams):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class PitrBaseBackupParams(JobParams):
    source: str = Field(min_length=1, max_length=63)
    backup_type: BackupType = BackupType.manual


class PitrRestoreParams(PitrRestoreRequest, JobParams):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    source: str = Field(min_length=1, max_length=63)


class PitrVerifyParams(JobParams):
    source: str = Field(min_length=1, max_length=63)
    drill: bool = True


class CatalogRebuildParams(JobParams):
    dry_run: bool = False


class DrillParams(JobParams):
    """restore_drill: one source, or every source with a backup when None."""

    source: str | None = Field(default=None, min_length=1, max_length=63)


class ReverifyParams(JobParams):
    """reverify: the rolling re-verification; only a schedule's fire time."""


PARAMS_OF_KIND: dict[JobKind, type[JobParams]] = {
    JobKind.database: DatabaseParams,
    JobKind.content: ContentParams,
    JobKind.full: FullParams,
    JobKind.verify: VerifyParams,
    JobKind.restore: RestoreParams,
    JobKind.cleanup: CleanupParams,
    JobKind.stats_report: ReportParams,
    JobKind.health_check: ReportParams,
    JobKind.content_import: ContentImportParams,
    JobKind.restore_drill: DrillParams,
    JobKind.reverify: ReverifyParams,
    JobKind.catalog_rebuild: CatalogRebuildParams,
    JobKind.pitr_basebackup: PitrBaseBackupParams,
    JobKind.pitr_restore: PitrRestoreParams,
    JobKind.pitr_verify: PitrVerifyParams,
}

P = TypeVar("P", bound=JobParams)


def params_of(job: BackupJob, model: type[P]) -> P:
    """A job's stored params read through its kind's model."""
    expected = PARAMS_OF_KIND[job.kind]
    if not issubclass(model, expected):
        raise TypeError(f"{job.kind.value} jobs take {expected.__name__}, not {model.__name__}")
    return model.model_validate(job.params)


def checked_params(kind: JobKind, params: JobParams | dict[str, Any]) -> dict[str, Any]:
    """Params of a job about to be queued, validated for its kind, in their stored shape."""
    model = PARAMS_OF_KIND[kind]
    if isinstance(params, JobParams):
        if not isinstance(params, model):
            raise TypeError(f"{kind.value} jobs take {model.__name__}, "
                            f"not {type(params).__name__}")
        return params.stored()
    return model.model_validate(params).stored()
