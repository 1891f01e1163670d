"""Fixtures: a real catalog database on the local MongoDB server, the app, users, tokens.

Plain helpers and constants live in tests/support/; test modules import them from there,
never from this file (pytest loads it as a plugin).
"""

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from app.config import Settings
from app.main import create_app
from app.models.backup import Backup
from app.models.job import BackupJob
from app.models.user import Role, UserCreate
from app.services.access import auth as auth_service
from tests.support.accounts import TEST_PASSWORD, Account
from tests.support.audit import chain_ok
from tests.support.big_source import big
from tests.support.data import create_mongo_database, create_pg_database
from tests.support.settings import MONGO_DB, MONGO_URI, PG_DB, PG_URI, RUN, WORK, make_settings

__all__ = ["big", "chain_ok"]  # fixtures defined in tests/support/, offered to every test module
UNIT_TESTS = Path(__file__).parent / "unit"


@pytest.fixture(scope="session", autouse=True)
def _work_dir_removed_at_end() -> Iterator[None]:
    """The run's stores, spools and keys go when the run ends."""
    yield
    shutil.rmtree(WORK, ignore_errors=True)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    await client.drop_database(settings.catalog.database)
    await client.close()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://backvault.test") as c:
        yield c


@pytest.fixture(scope="session")
async def accounts(app: FastAPI, settings: Settings) -> dict[Role, Account]:
    """One user of each role with a valid token."""
    result = {}
    for role in Role:
        user = await auth_service.create_user(UserCreate(
            username=f"{role.value}-{uuid.uuid4().hex[:6]}", password=SecretStr(TEST_PASSWORD),
            email=f"{role.value}@example.com", name=f"Test {role.value}", role=role))
        token, _ = auth_service.issue_token(user, settings)
        result[role] = Account(user=user, token=token)
    return result


@pytest.fixture
def viewer(accounts: dict[Role, Account]) -> Account:
    return accounts[Role.viewer]


@pytest.fixture
def admin(accounts: dict[Role, Account]) -> Account:
    return accounts[Role.admin]


@pytest.fixture
def superadmin(accounts: dict[Role, Account]) -> Account:
    return accounts[Role.superadmin]


@pytest.fixture
async def empty_catalog(app: FastAPI) -> AsyncIterator[None]:
    """Backups and jobs collections emptied before and after the test."""
    await Backup.find_all().delete()
    await BackupJob.find_all().delete()
    yield
    await Backup.find_all().delete()
    await BackupJob.find_all().delete()


@pytest.fixture(scope="session")
async def source_databases(app: FastAPI) -> None:
    """The `pg` and `mongo` sources of the test settings, filled with tricky content."""
    await create_pg_database(PG_URI, PG_DB)
    await create_mongo_database(MONGO_URI, MONGO_DB)


@pytest.fixture
async def own_tables_dropped() -> AsyncIterator[None]:
    """Tables a test adds to the shared `pg` source (prefixed `pitr_`) go when it ends:
    other tests compare that database with their manifests."""
    yield
    conn = await asyncpg.connect(PG_URI.rsplit("/", 1)[0] + "/" + PG_DB)
    try:
        for (name,) in await conn.fetch(
                r"SELECT tablename FROM pg_tables WHERE tablename LIKE 'pitr\_%'"):
            await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
    finally:
        await conn.close()


@pytest.fixture(scope="session", autouse=True)
async def _run_databases_dropped_at_end(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every database whose name carries this run's id goes when the run ends.

    Whichever tests made them: a module run alone cleans up as well as the whole suite.
    """
    yield
    if all(UNIT_TESTS in item.path.parents for item in request.session.items):
        return  # the unit tests touch no server
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    for name in await client.list_database_names():
        if RUN in name:
            await client.drop_database(name)
    await client.close()
    conn = await asyncpg.connect(PG_URI)
    for row in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                f"%{RUN}%"):
        await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    await conn.close()
