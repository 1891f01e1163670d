"""Wrappers around any Storage, in the restic manner: retries of transient errors with
backoff, and a bandwidth cap on every read and write."""

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

import structlog

from app.services.artifacts.stages import Chunks, throttled
from app.services.storage.base import ObjectInfo, Storage, StorageError

log = structlog.get_logger(__name__)
T = TypeVar("T")


class StorageWrapper:
    """Passes every call to the wrapped storage; subclasses override some."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.name = inner.name

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def put(self, key: str, chunks: Chunks) -> int:
        return await self.inner.put(key, chunks)

    def get(self, key: str) -> Chunks:
        return self.inner.get(key)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await self.inner.stat(key)

    def list_objects(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        return self.inner.list_objects(prefix)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    def describe(self, key: str) -> str:
        return self.inner.describe(key)

    async def discard_incomplete(self, key: str) -> int:
        return await self.inner.discard_incomplete(key)

    async def discard_stale_partials(self, older_than_seconds: float) -> int:
        return await self.inner.discard_stale_partials(older_than_seconds)

    def unwrapped(self) -> Storage:
        """The backend under every wrapper."""
        return backend_of(self.inner)


def backend_of(store: Storage) -> Storage:
    """The backend under every wrapper of `store` (itself when it has none)."""
    return store.unwrapped() if isinstance(store, StorageWrapper) else store


class RetryingStorage(StorageWrapper):
    """Repeats idempotent calls that failed transiently, with exponential backoff and
    jitter. A put is never repeated: it consumes a one-shot stream (S3 parts are retried
    by the S3 client itself, GCS chunks resumed by gcs_upload); a read or listing is
    repeated only before its first item."""

    def __init__(self, inner: Storage, retries: int = 4, base_seconds: float = 0.5) -> None:
        super().__init__(inner)
        self.retries = retries
        self.base_seconds = base_seconds

    async def _pause(self, attempt: int, what: str, exc: BaseException) -> None:
        delay = self.base_seconds * 2 ** attempt * random.uniform(0.8, 1.2)  # noqa: S311
        log.warning("storage call failed, retrying", call=what, attempt=attempt + 1,
                    retry_in=round(delay, 2), error=str(exc))
        await asyncio.sleep(delay)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except StorageError as exc:
                if not exc.transient or attempt >= self.retries:
                    raise
                await self._pause(attempt, what, exc)
        raise AssertionError("unreachable")

    async def prepare(self) -> None:
        await self._call("prepare", self.inner.prepare)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await self._call(f"stat {key}", lambda: self.inner.stat(key))

    async def delete(self, key: str) -> None:
        await self._call(f"delete {key}", lambda: self.inner.delete(key))

    async def discard_incomplete(self, key: str) -> int:
        return await self._call(f"discard {key}", lambda: self.inner.discard_incomplete(key))

    async def discard_stale_partials(self, older_than_seconds: float) -> int:
        return await self._call("discard stale partials",
                                lambda: self.inner.discard_stale_partials(older_than_seconds))

    async def get(self, key: str) -> Chunks:
        async for chunk in self._first_then_rest(f"get {key}", lambda: self.inner.get(key)):
            yield chunk

    async def list_objects(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        async for info in self._first_then_rest(f"list {prefix}",
                                                lambda: self.inner.list_objects(prefix)):
            yield info

    async def _first_then_rest(self, what: str, open_stream: Callable[[], AsyncGenerator[T, None]]
                               ) -> AsyncGenerator[T, None]:
        """Retries opening the stream up to its first item; after that, errors pass."""
        for attempt in range(self.retries + 1):
            stream = open_stream()
            async with aclosing(stream):
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    return
                except StorageError as exc:
                    if not exc.transient or attempt >= self.retries:
                        raise
                    await self._pause(attempt, what, exc)
                    continue
                yield first
                async for item in stream:
                    yield item
                return


class ThrottledStorage(StorageWrapper):
    """Holds every read and write (manifests too) to `bytes_per_second`, per stream."""

    def __init__(self, inner: Storage, bytes_per_second: float) -> None:
        super().__init__(inner)
        self.bytes_per_second = bytes_per_second

    async def put(self, key: str, chunks: Chunks) -> int:
        return await self.inner.put(key, throttled(chunks, self.bytes_per_second))

    def get(self, key: str) -> Chunks:
        return throttled(self.inner.get(key), self.bytes_per_second)


def is_throttled(storage: Storage) -> bool:
    while isinstance(storage, StorageWrapper):
        if isinstance(storage, ThrottledStorage):
            return True
        storage = storage.inner
    return False


__all__ = ["RetryingStorage", "StorageWrapper", "ThrottledStorage", "is_throttled"]
