"""The parts every settings group shares: the base group, checked names and values."""

import zoneinfo
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

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


def without_userinfo(url: str) -> str:
    """A URL as it may be shown: a `user:password@` part (sent as basic auth) dropped."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def host_port(uri: str) -> tuple[str | None, int | None]:
    """The first host of a URI and its port; the user-info part is never read."""
    hosts = urlsplit(uri).netloc.rpartition("@")[2]
    first = unquote(hosts.split(",")[0])
    if first.startswith("["):  # an IPv6 literal
        host, _, rest = first[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = first.partition(":")
    return (host or None), (int(port) if port.isdigit() else None)


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
