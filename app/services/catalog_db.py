"""The catalog's MongoDB connection and Beanie initialisation."""

import asyncio
from typing import Any

from beanie import init_beanie
from pymongo import AsyncMongoClient, IndexModel
from pymongo.errors import PyMongoError

from app.config import Settings
from app.models import DOCUMENT_MODELS

MongoClient = AsyncMongoClient[dict[str, Any]]
INDEX_ATTEMPTS = 5


async def open_catalog(settings: Settings) -> MongoClient:
    """Connect, then create the collections' indexes through Beanie."""
    client: MongoClient = AsyncMongoClient(settings.catalog.mongo_uri.get_secret_value(),
                                           tz_aware=True, serverSelectionTimeoutMS=10_000,
                                           appname="backvault")
    await init_beanie(database=client[settings.catalog.database],
                      document_models=DOCUMENT_MODELS, skip_indexes=True)
    await ensure_indexes()
    return client


async def ensure_indexes() -> None:
    """Create the declared indexes that are missing.

    Only missing ones: FerretDB v1 drops the connection when createIndexes names
    indexes that already exist (MongoDB treats that as a no-op).
    """
    for model in DOCUMENT_MODELS:
        declared: list[IndexModel] = list(getattr(model.Settings, "indexes", []))
        collection = model.get_pymongo_collection()
        for attempt in range(INDEX_ATTEMPTS):
            existing = set(await collection.index_information())
            missing = [index for index in declared if index.document["name"] not in existing]
            if not missing:
                break
            try:
                await collection.create_indexes(missing)
                break
            except PyMongoError:
                # Replicas starting together race to create the same index; look again.
                if attempt == INDEX_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))


async def ping_catalog(client: MongoClient, timeout: float = 3.0) -> bool:
    try:
        await asyncio.wait_for(client.admin.command("ping"), timeout)
    except (PyMongoError, TimeoutError):
        return False
    return True
