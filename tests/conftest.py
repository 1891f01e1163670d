"""Fixtures: a real catalog database on the local MongoDB server, the app, users, tokens.

The services come from scripts/services (`make test` starts them and exports
their addresses as BACKVAULT_* variables).
"""

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from app.config import Settings
from app.main import create_app
from app.models.backup import Backup
from app.models.job import BackupJob
from app.models.user import Role, User, UserCreate
from app.services import auth as auth_service

MONGO_URI = os.environ.get("BACKVAULT_MONGO_URI", "mongodb://127.0.0.1:57017/")
PG_URI = os.environ.get("BACKVAULT_PG_URI",
                        "postgresql://backvault:backvault@127.0.0.1:55432/postgres")
TEST_PASSWORD = "correct horse battery staple"
JWT_SECRET = "test-jwt-secret-" + "x" * 32


def make_settings(**groups: Any) -> Settings:
    """Settings for tests, built from arguments only (no .env, no BACKUP_* from the shell)."""
    base: dict[str, Any] = {
        "system": {"environment": "test", "log_level": "warning"},
        "catalog": {"mongo_uri": SecretStr(MONGO_URI),
                    "database": f"backvault_test_{uuid.uuid4().hex[:10]}"},
        "auth": {"jwt_secret": SecretStr(JWT_SECRET), "bootstrap_username": "root",
                 "bootstrap_password": SecretStr("root-password-for-tests")},
        "storage": {"local_dir": "/tmp/backvault-test-backups"},
    }
    base.update(groups)
    return Settings(_env_file=None, **base)


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
