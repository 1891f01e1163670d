"""The archiver lease of a source: exactly one replica runs its pg_receivewal at a time;
another takes over once the holder stops renewing it."""

from datetime import timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from app.models.common import utcnow
from app.models.wal import WalSegment

LEASES = "pitr_leases"


def _leases() -> Any:
    return WalSegment.get_pymongo_collection().database[LEASES]


async def take_or_renew(name: str, owner: str, seconds: float,
                        status: dict[str, Any] | None = None) -> bool:
    """True when `owner` holds `name` for the next `seconds` (renewed, new or taken over);
    `status` is stored with it, for every replica's health and API to read."""
    now = utcnow()
    held = {"owner": owner, "until": now + timedelta(seconds=seconds), "renewedAt": now,
            "status": status or {}}
    renewed = await _leases().update_one({"_id": name, "owner": owner}, {"$set": held})
    if renewed.matched_count:
        return True
    try:
        await _leases().insert_one({"_id": name, **held})
        return True
    except DuplicateKeyError:
        taken = await _leases().find_one_and_update(
            {"_id": name, "until": {"$lt": now}}, {"$set": held})
        return taken is not None


async def release(name: str, owner: str) -> None:
    await _leases().delete_one({"_id": name, "owner": owner})


async def holder(name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await _leases().find_one({"_id": name})
    return found
