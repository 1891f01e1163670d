"""Short mutual exclusion across replicas, held in the catalog (a lease that expires)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from app.errors import ConflictError
from app.models.common import utcnow
from app.models.user import User

LOCKS = "catalog_locks"


def _locks() -> Any:
    return User.get_pymongo_collection().database[LOCKS]


async def _take(name: str, owner: str, lease: timedelta) -> bool:
    now = utcnow()
    try:
        await _locks().insert_one({"_id": name, "owner": owner, "until": now + lease})
        return True
    except DuplicateKeyError:
        # Held; take it over only if its holder's lease ran out (a replica died holding it).
        taken = await _locks().find_one_and_update(
            {"_id": name, "until": {"$lt": now}}, {"$set": {"owner": owner, "until": now + lease}})
        return taken is not None


@asynccontextmanager
async def catalog_lock(name: str, *, lease_seconds: float = 15.0,
                       wait_seconds: float = 5.0) -> AsyncIterator[None]:
    """Hold `name` across every replica for the block; 409 when it stays busy."""
    owner = uuid.uuid4().hex
    lease = timedelta(seconds=lease_seconds)
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while not await _take(name, owner, lease):
        if asyncio.get_running_loop().time() >= deadline:
            raise ConflictError(f"Another change of {name} is in progress; try again")
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        await asyncio.shield(_locks().delete_one({"_id": name, "owner": owner}))
