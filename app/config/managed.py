"""Database sources an admin adds at runtime: the key their URIs are sealed with, and the
current set (read from the catalog by each replica; `Settings.all_sources()` includes it)."""

from typing import Annotated

import pyrage
from pydantic import BeforeValidator, SecretStr, field_validator

from app.config.common import Group, empty_as_none
from app.config.sources import SourceSettings


class SourceStoreSettings(Group):
    # An age identity (AGE-SECRET-KEY-1...): URIs of runtime sources are stored encrypted
    # to it. Unset: sources come from the environment only.
    key: Annotated[SecretStr | None, BeforeValidator(empty_as_none)] = None

    @field_validator("key")
    @classmethod
    def _an_age_identity(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                pyrage.x25519.Identity.from_str(value.get_secret_value().strip())
            except pyrage.IdentityError:
                raise ValueError("source_store.key must be an age identity "
                                 "(AGE-SECRET-KEY-1...)") from None
        return value

    def identity(self) -> pyrage.x25519.Identity | None:
        if self.key is None:
            return None
        return pyrage.x25519.Identity.from_str(self.key.get_secret_value().strip())


# Per catalog database: one process may serve several catalogs (the test suite does).
_CURRENT: dict[str, tuple[SourceSettings, ...]] = {}


def managed_sources(catalog_database: str) -> tuple[SourceSettings, ...]:
    """The runtime sources last read from this catalog."""
    return _CURRENT.get(catalog_database, ())


def set_managed_sources(catalog_database: str, sources: list[SourceSettings]) -> None:
    _CURRENT[catalog_database] = tuple(sources)
