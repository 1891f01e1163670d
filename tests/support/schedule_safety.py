"""A second app, started for real on a catalog of its own (schedule-safety tests)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.config import Settings
from tests.support.apps import root_headers, running_app
from tests.support.settings import MONGO_URI


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
    async with running_app(session_app, session_settings, settings) as (other, client):
        yield other, client, await root_headers(client)
