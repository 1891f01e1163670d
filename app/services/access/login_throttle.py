"""Failed-login backoff per username and per client address, kept in the catalog.

The state lives in the `login_failures` collection so that every replica sees it.
"""

import math
from datetime import datetime, timedelta
from typing import Any

import structlog
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.config import LoginSettings
from app.errors import TooManyRequestsError
from app.models.common import utcnow
from app.models.user import LoginFailures

log = structlog.get_logger(__name__)
MAX_DOUBLINGS = 40  # 2**40 times any base is past every cap; keeps the float finite


def keys(username: str, address: str) -> list[str]:
    return [f"user:{username.lower()}", f"ip:{address}"]


def backoff_seconds(failures: int, settings: LoginSettings) -> float:
    """0 while failures are free; then base, doubled per further failure, capped."""
    extra = failures - settings.free_failures
    if extra < 0:
        return 0.0
    delay = settings.backoff_base_seconds * 2 ** min(extra, MAX_DOUBLINGS)
    return float(min(delay, settings.backoff_max_seconds))


async def check(username: str, address: str) -> None:
    """TooManyRequestsError (429, Retry-After) while the username or the address is blocked."""
    now = utcnow()
    docs = await LoginFailures.find({"key": {"$in": keys(username, address)}}).to_list()
    until = [d.blocked_until for d in docs if d.blocked_until is not None
             and d.blocked_until > now]
    if not until:
        return
    wait = max(1, math.ceil((max(until) - now).total_seconds()))
    log.warning("login refused while blocked", username=username, client=address,
                retry_after=wait)
    raise TooManyRequestsError(f"Too many failed logins; try again in {wait} seconds", wait,
                               {"retryAfterSeconds": wait})


async def record_failure(username: str, address: str, settings: LoginSettings) -> None:
    """Count a failed login against the username and the address; block past the free ones."""
    now = utcnow()
    counts = [await _count(key, now, settings) for key in keys(username, address)]
    log.warning("login failed", username=username, client=address,
                user_failures=counts[0], address_failures=counts[1])
    collection = LoginFailures.get_pymongo_collection()
    forgotten = now - timedelta(seconds=settings.window_seconds + settings.backoff_max_seconds)
    await collection.delete_many({"lastFailureAt": {"$lt": forgotten}})


async def _count(key: str, now: datetime, settings: LoginSettings) -> int:
    """Atomic increment (after forgetting failures older than the window); sets the block."""
    collection = LoginFailures.get_pymongo_collection()
    stale = now - timedelta(seconds=settings.window_seconds)
    await collection.update_one({"key": key, "lastFailureAt": {"$lt": stale}},
                                {"$set": {"failures": 0}})
    doc: dict[str, Any] | None = None
    for _ in range(2):
        try:
            doc = await collection.find_one_and_update(
                {"key": key}, {"$inc": {"failures": 1}, "$set": {"lastFailureAt": now}},
                upsert=True, return_document=ReturnDocument.AFTER)
            break
        except DuplicateKeyError:
            continue  # another replica inserted the key first; increment theirs
    failures = int(doc["failures"]) if doc else 1
    delay = backoff_seconds(failures, settings)
    if delay > 0:
        await collection.update_one(
            {"key": key}, {"$set": {"blockedUntil": now + timedelta(seconds=delay)}})
    return failures


async def record_success(username: str) -> None:
    """A successful login forgets the username's failures (not the address's)."""
    await LoginFailures.find({"key": keys(username, "")[0]}).delete()
