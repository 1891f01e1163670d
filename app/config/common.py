"""The parts every settings group shares: the base group, checked names and values."""

import zoneinfo
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

from app.scheduler.cron import validate_crontab


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


def empty_as_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def known_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r}") from exc
    return value


Crontab = Annotated[str, AfterValidator(validate_crontab)]
TimeZoneName = Annotated[str, AfterValidator(known_timezone)]
SourceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
# age X25519 recipient: "age1" + 58 bech32 characters.
AgeRecipient = Annotated[str, Field(pattern=r"^age1[02-9ac-hj-np-z]{58}$")]
