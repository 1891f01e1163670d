"""A second app, started for real on a catalog of its own (schedule-safety tests)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from beanie import init_beanie
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.config import Settings
from app.main import create_app
from app.models import DOCUMENT_MODELS
from app.models.audit import AUDIT_MODELS
from tests.support.settings import MONGO_URI

ROOT = {"username": "root", "password": "root-password-for-tests"}


@asynccontextmanager
async def catalog_of(settings: Settings) -> AsyncIterator[Any]:
    """The raw database of `settings`' catalog, dropped afterwards."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI, tz_aware=True)
    try:
        yield mongo[settings.catalog.database]
    finally:
        await mongo.drop_database(settings.catalog.database)
        await mongo.close()


@asynccontextmanager
async def started(session_app: FastAPI, session_settings: Settings,
                  settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient,
                                                               dict[str, str]]]:
    """Run a new app's whole start-up and yield it with a client and root's headers."""
    other = create_app(settings)
    try:
        async with other.router.lifespan_context(other):
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://backvault.test") as client:
                token = await client.post("/api/auth/token", json=ROOT)
                assert token.status_code == 200, token.text
                headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
                yield other, client, headers
    finally:
        # Beanie's document classes are global: bind them to the session app's catalog again.
        await init_beanie(
            database=session_app.state.mongo[session_settings.catalog.database],
            document_models=[*DOCUMENT_MODELS, *AUDIT_MODELS],
            skip_indexes=True)
