"""Fixtures: a real catalog database on the local MongoDB server, the app, users, tokens.

The services come from scripts/services (`make test` starts them and exports
their addresses as BACKVAULT_* variables).
"""

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyrage
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from app.config import Settings
from app.main import create_app
from app.models.backup import Backup
from app.models.job import BackupJob
from app.models.user import Role, User, UserCreate
from app.services.access import auth as auth_service

MONGO_URI = os.environ.get("BACKVAULT_MONGO_URI", "mongodb://127.0.0.1:57017/")
PG_URI = os.environ.get("BACKVAULT_PG_URI",
                        "postgresql://backvault:backvault@127.0.0.1:55432/postgres")
PG_BIN = os.environ.get("BACKVAULT_PG_BIN", "/usr/lib/postgresql/15/bin")
IPFS_API = os.environ.get("BACKVAULT_IPFS_API", "http://127.0.0.1:55001")
IPFS_GATEWAY = os.environ.get("BACKVAULT_IPFS_GATEWAY", "http://127.0.0.1:58080")
TOOLS_BIN = Path(os.environ.get("BACKVAULT_TOOLS_BIN", Path(__file__).parents[1] / ".data/bin"))
TEST_PASSWORD = "correct horse battery staple"
JWT_SECRET = "test-jwt-secret-" + "x" * 32
RUN = uuid.uuid4().hex[:8]
PG_DB = f"bv_src_{RUN}"
MONGO_DB = f"bv_src_{RUN}"
WORK = Path(tempfile.mkdtemp(prefix="backvault-tests-"))
AGE_IDENTITY = pyrage.x25519.Identity.generate()
AGE_KEY_FILE = WORK / "age-key.txt"
AGE_KEY_FILE.write_text(f"# test identity\n{AGE_IDENTITY}\n")
AGE_RECIPIENT = str(AGE_IDENTITY.to_public())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


GAIA_HUB = f"http://127.0.0.1:{_free_port()}"  # served by the gaia_hub fixture
# Content items the app reads from a collection of its own catalog database.
CONTENT_SOURCES = [
    {"name": "ipfs-files", "kind": "mongo_query", "type": "ipfs", "mongo_source": "catalog",
     "collection": "app_files", "field": "cid"},
    {"name": "gaia-files", "kind": "mongo_query", "type": "gaia", "mongo_source": "catalog",
     "collection": "app_files", "field": "gaia"},
]


def pg_uri(database: str) -> str:
    return PG_URI.rsplit("/", 1)[0] + "/" + database


def make_settings(**groups: Any) -> Settings:
    """Settings for tests, built from arguments only (no .env, no BACKUP_* from the shell)."""
    base: dict[str, Any] = {
        # Schedules off: the seeded defaults must not fire in the middle of a test run.
        "system": {"environment": "test", "log_level": "warning", "enabled": False},
        # Some schedule tests fire every second or two.
        "schedules": {"allow_sub_minute": True},
        "catalog": {"mongo_uri": SecretStr(MONGO_URI),
                    "database": f"backvault_test_{uuid.uuid4().hex[:10]}"},
        "auth": {"jwt_secret": SecretStr(JWT_SECRET), "bootstrap_username": "root",
                 "bootstrap_password": SecretStr("root-password-for-tests")},
        "storage": {"local_dir": str(WORK / "store"), "spool_dir": str(WORK / "spool")},
        "sources": [{"name": "pg", "kind": "postgres", "uri": pg_uri(PG_DB)},
                    {"name": "mongo", "kind": "mongodb", "uri": MONGO_URI + MONGO_DB}],
        "tools": {"pg_bin_dir": PG_BIN},
        "encryption": {"recipients": [AGE_RECIPIENT], "identity_file": str(AGE_KEY_FILE)},
        "content": {"ipfs_gateways": [IPFS_GATEWAY], "kubo_api": IPFS_API, "retries": 1,
                    "gaia_hubs": [GAIA_HUB], "sources": CONTENT_SOURCES},
    }
    base.update(groups)
    return Settings(_env_file=None, **base)


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


@dataclass
class Account:
    user: User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


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
async def source_databases(app: FastAPI) -> AsyncIterator[None]:
    """The `pg` and `mongo` sources of the test settings, filled with tricky content."""
    from tests.support.data import create_mongo_database, create_pg_database

    await create_pg_database(PG_URI, PG_DB)
    await create_mongo_database(MONGO_URI, MONGO_DB)
    yield
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    for name in await client.list_database_names():
        if RUN in name:
            await client.drop_database(name)
    await client.close()
    import asyncpg

    conn = await asyncpg.connect(PG_URI)
    for row in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                f"%{RUN}%"):
        await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    await conn.close()


async def wait_job(client: httpx.AsyncClient, headers: dict[str, str], job_id: str,
                   timeout: float = 120) -> dict[str, Any]:
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job: dict[str, Any] = (await client.get(f"/api/backups/jobs/{job_id}",
                                                headers=headers)).json()
        if job["status"] in ("completed", "failed", "interrupted"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.1)
