"""Liveness tests: a second app started on its own catalog (behind proxies)."""

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


@asynccontextmanager
async def started(session_app: FastAPI, session_settings: Settings,
                  settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A new app through its whole start-up, with a client; its catalog dropped after."""
    other = create_app(settings)
    try:
        async with other.router.lifespan_context(other):
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://backvault.test") as client:
                yield client
    finally:
        # Beanie's document classes are global: bind them to the session app's catalog again.
        await init_beanie(
            database=session_app.state.mongo[session_settings.catalog.database],
            document_models=[*DOCUMENT_MODELS, *AUDIT_MODELS], skip_indexes=True)
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
        await mongo.drop_database(settings.catalog.database)
        await mongo.close()
