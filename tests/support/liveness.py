"""Liveness tests: a second app started on its own catalog (behind proxies)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.config import Settings
from tests.support.apps import running_app
from tests.support.settings import MONGO_URI


@asynccontextmanager
async def started(session_app: FastAPI, session_settings: Settings,
                  settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A new app through its whole start-up, with a client; its catalog dropped after."""
    try:
        async with running_app(session_app, session_settings, settings) as (_, client):
            yield client
    finally:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
        await mongo.drop_database(settings.catalog.database)
        await mongo.close()
