"""The storage interface every backend implements."""

from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from app.errors import AppError, NotFoundError
from app.services.artifacts.stages import Chunks


class StorageError(AppError):
    """A storage call failed; `transient` ones (timeouts, resets, 5xx, SlowDown) may
    succeed when repeated."""

    status_code = 502
    code = "storage_error"

    def __init__(self, message: str, details: Any = None, *, transient: bool = False) -> None:
        super().__init__(message, details)
        self.transient = transient


class ObjectNotFound(NotFoundError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None


def check_key(key: str) -> str:
    """Keys are relative, slash-separated and never climb out of the root."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"Invalid storage key {key!r}")
    return key


class KeyPrefix:
    """Keys under a prefix inside a bucket or container (object stores)."""

    prefix: str

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unprefix(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full


def status_reason(status: int, code: str) -> str:
    """An HTTP failure as a reason: the status and the service's code, never its text."""
    if status in (401, 403):
        return f"authentication failed or access denied ({status} {code})"
    return f"{status} {code}"


@dataclass(frozen=True)
class ErrorMap:
    """How one backend's failures become StorageErrors: a reason that carries no secret
    (SDK texts can hold signed URLs), and whether repeating the call may help."""

    errors: tuple[type[BaseException], ...]
    reason: Callable[[BaseException], str]
    transient: Callable[[BaseException], bool]

    def mapped(self, exc: BaseException, what: str) -> "StorageError":
        return StorageError(f"{what}: {self.reason(exc)}", transient=self.transient(exc))

    @contextmanager
    def errors_as(self, what: str) -> Iterator[None]:
        try:
            yield
        except self.errors as exc:
            raise self.mapped(exc, what) from exc


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a relative key, possibly ending in "/"."""
    if prefix and (prefix.startswith("/") or not prefix.rstrip("/")):
        raise StorageError(f"Invalid storage key prefix {prefix!r}")
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


class Storage(Protocol):
    name: str

    async def prepare(self) -> None:
        """Make the storage ready to use (create the bucket or directory)."""
        ...

    async def put(self, key: str, chunks: Chunks) -> int:
        """Store the stream under key, all or nothing; returns the size written."""
        ...

    def get(self, key: str) -> Chunks:
        """The stored bytes as a stream; ObjectNotFound if absent."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None: ...

    def list_objects(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]: ...

    async def delete(self, key: str) -> None:
        """Remove key; absent keys are fine."""
        ...

    def describe(self, key: str) -> str:
        """Where key is, for people (path or s3:// URL)."""
        ...

    async def discard_incomplete(self, key: str) -> int:
        """Remove unfinished writes of key left by a killed process; returns how many."""
        ...

    async def discard_stale_partials(self, older_than_seconds: float) -> int:
        """Remove every unfinished write older than this (no live writer lasts that long)."""
        ...
