"""The `big` PostgreSQL source: large enough that a backup of it takes seconds."""

from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings
from tests.support.data import create_big_pg_database
from tests.support.settings import PG_URI, RUN, pg_uri

BIG_DB = f"bv_big_{RUN}"  # dropped with the run's other databases


@pytest.fixture(scope="session")
async def big(app: FastAPI) -> str:
    """The name of the big database, created once per run."""
    await create_big_pg_database(PG_URI, BIG_DB)
    return BIG_DB


def with_changes(settings: Settings, **groups: dict[str, Any]) -> Settings:
    """The test settings plus the `big` source, with some groups changed."""
    update: dict[str, Any] = {
        "sources": [*settings.sources,
                    SourceSettings(name="big", kind=SourceKind("postgres"),
                                   uri=SecretStr(pg_uri(BIG_DB)))]}
    for group, changes in groups.items():
        update[group] = getattr(settings, group).model_copy(update=changes)
    return settings.model_copy(update=update)
