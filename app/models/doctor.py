"""Deep health (`backvault doctor`, `GET /api/backups/health?deep=true`): one check per
thing that must work for a backup or a restore to succeed."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from app.models.common import ApiSchema
from app.models.stats import HealthReport


class CheckStatus(StrEnum):
    ok = "ok"
    warning = "warning"
    failed = "failed"


CHECK_ORDER = [CheckStatus.ok, CheckStatus.warning, CheckStatus.failed]


class DoctorCheck(ApiSchema):
    area: str = Field(description="storage, space, source, content, catalog or notifications")
    name: str = Field(description="the target, path, source or endpoint checked")
    status: CheckStatus
    latency_ms: float | None = None
    detail: str | None = Field(default=None, description="what is wrong, or what was found")
    facts: dict[str, Any] = {}

    @property
    def issue(self) -> str:
        return f"{self.area} {self.name}: {self.detail or self.status.value}"


class DoctorReport(ApiSchema):
    status: CheckStatus = Field(description="the worst of the checks")
    checks: list[DoctorCheck]
    timestamp: datetime


class DeepHealthReport(HealthReport):
    """The health rules and every deep check; their issues are listed with the others."""

    deep: DoctorReport
