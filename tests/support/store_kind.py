"""A storage kind under the contract tests (how to reach it, real services only), and
what the checks ask of any kind: its keys, and its unfinished writes."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from app.services.artifacts.stages import Chunks
from app.services.storage import Storage


@runtime_checkable
class RangedStorage(Protocol):
    """A storage that also streams a byte range of an object."""

    def get_range(self, key: str, offset: int, length: int | None = None) -> Chunks: ...


@dataclass
class StoreKind:
    """How the contract reaches one kind. Every Storage `make` returns for one StoreKind
    addresses the same place (container/bucket and prefix), so one written through a
    proxy can be inspected through another made directly."""

    name: str
    # A fresh backend; endpoint None: the service directly, else this URL (a proxy).
    make: Callable[[str | None], Storage]
    # The service's loopback port, which the cutting proxy forwards to.
    upstream_port: int
    # The bytes per part/block the kind uploads at a time.
    part_size: int
    # A target for BACKUP_STORAGE__TARGETS (as a dict), named, at an optional endpoint.
    target: Callable[[str, str | None], dict[str, Any]]
    # The same place with wrong credentials, and the wrong secret (never in a message).
    wrong_credentials: Callable[[], Storage]
    wrong_secret: str
    # Keys with unfinished uploads, where the service can list them (None: it cannot).
    pending: Callable[[Storage], Awaitable[list[str]]] | None = None
    # Words one of which a wrong-credentials message has (the service's own reason).
    auth_words: tuple[str, ...] = ("auth", "denied", "forbidden", "credential", "signature")
    notes: list[str] = field(default_factory=list)


async def keys(storage: Storage, prefix: str) -> list[str]:
    return [o.key async for o in storage.list_objects(prefix)]


async def pending_now(kind: StoreKind, storage: Storage) -> list[str] | None:
    return None if kind.pending is None else sorted(await kind.pending(storage))


async def eventually_pending(kind: StoreKind, storage: Storage, key: str) -> None:
    """The unfinished upload of key shows among the pending ones (where listable)."""
    if kind.pending is None:
        return
    for _ in range(100):
        if key in await kind.pending(storage):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never showed as an unfinished upload")


# ---- the checks ---------------------------------------------------------------------
