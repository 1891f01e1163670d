"""The catalog's MongoDB connection and Beanie initialisation."""

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

from beanie import init_beanie
from pymongo import AsyncMongoClient, IndexModel
from pymongo.errors import PyMongoError

from app.config import Settings
from app.errors import AppError
from app.models import DOCUMENT_MODELS
from app.models.audit import AUDIT_MODELS

MongoClient = AsyncMongoClient[dict[str, Any]]
INDEX_ATTEMPTS = 5
T = TypeVar("T")


async def open_catalog(settings: Settings) -> MongoClient:
    """Connect, then create the collections' indexes through Beanie."""
    client: MongoClient = AsyncMongoClient(settings.catalog.mongo_uri.get_secret_value(),
                                           tz_aware=True, serverSelectionTimeoutMS=10_000,
                                           appname="backvault")
    await init_beanie(database=client[settings.catalog.database],
                      document_models=[*DOCUMENT_MODELS, *AUDIT_MODELS],
                      skip_indexes=True)
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


class CatalogBusyError(AppError):
    status_code = 503
    code = "catalog_busy"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class SharedReads:
    """Expensive catalog reads (list pages): at most `slots` at once, so they never take
    every pooled connection from job leases and readiness, and one at a time per key:
    identical reads that arrive while one runs wait together and share the next answer.

    A read joins only one that has not started, so each answer reflects the catalog as
    it was after the request arrived (a client sees its own writes). A read that waits
    longer than `wait_seconds` to start is refused with 503 instead of piling up.
    """

    def __init__(self, slots: int, wait_seconds: float) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        # Per event loop: tests and the CLI run several loops in one process.
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())
        self._waiting: dict[tuple[int, Hashable], asyncio.Future[Any]] = {}
        self._running: dict[tuple[int, Hashable], asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        slot_key = (id(loop), key)
        future = self._waiting.get(slot_key)
        if future is None or future.get_loop() is not loop:
            future = loop.create_future()
            future.add_done_callback(_retrieve)
            self._waiting[slot_key] = future
            task = loop.create_task(self._run(slot_key, future, fetch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Shielded: one client going away does not cancel the read the others wait for.
        return cast(T, await asyncio.shield(future))

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self.slots)
        return gate

    async def _run(self, slot_key: tuple[int, Hashable], future: asyncio.Future[Any],
                   fetch: Callable[[], Awaitable[Any]]) -> None:
        gate = self._gate()
        try:
            async with asyncio.timeout(self.wait_seconds):
                if (running := self._running.get(slot_key)) is not None:
                    await asyncio.wait([running])
                await gate.acquire()
        except TimeoutError:
            self._close(slot_key, future)
            future.set_exception(CatalogBusyError(
                "The catalog is busy with other list requests; try again shortly"))
            return
        try:
            self._close(slot_key, future)
            self._running[slot_key] = future
            result = await fetch()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # handed to every waiter, raised there
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            gate.release()
            if self._running.get(slot_key) is future:
                del self._running[slot_key]

    def _close(self, slot_key: tuple[int, Hashable], future: asyncio.Future[Any]) -> None:
        """From now on, arrivals start the next read instead of joining this one."""
        if self._waiting.get(slot_key) is future:
            del self._waiting[slot_key]


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Marks an error as seen when every waiter went away before it came.
    if not future.cancelled():
        future.exception()
