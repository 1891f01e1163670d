"""The checks every storage kind must pass (derived from the S3 tests), as functions taking
a `StoreKind` (store_kind.py; those with faults or the whole service are in
store_checks.py), and as `StoreContract`, the tests a kind's module gets once by
subclassing it:

    @pytest.fixture
    def kind() -> StoreKind: return StoreKind(name="azure", make=..., upstream_port=..., ...)

    class TestContract(StoreContract):
        pass

Checks that back up, verify and restore also need `settings` and `admin` (and the
`source_databases` fixture in the calling module).
"""

import asyncio
import hashlib
import os
import tracemalloc
from contextlib import aclosing

import pytest

from app.config import Settings
from app.services.artifacts.stages import collect, from_bytes
from app.services.storage.base import ObjectNotFound, StorageError
from tests.support.accounts import Account
from tests.support.store_checks import (
    check_copy_serves_restore,
    check_corrupted_object_fails_verify,
    check_discard_incomplete,
    check_endpoint_cut_mid_upload,
    check_ranged_read,
    check_transient_errors_retried,
    check_wrong_credentials,
)
from tests.support.store_kind import (
    RangedStorage,
    StoreKind,
    eventually_pending,
    keys,
    pending_now,
)
from tests.support.store_streams import (
    MIB,
    Gate,
    digest_of_pattern,
    failing,
    pattern,
    stream,
)


async def check_round_trip(kind: StoreKind) -> None:
    """put/get/stat/list/delete of a small and a multi-part object, streamed both ways."""
    storage = kind.make(None)
    await storage.prepare()
    await storage.prepare()  # idempotent
    big = 3 * kind.part_size + 12345
    assert await storage.put("a/2026/01/small.bin", from_bytes(b"hello")) == 5
    assert await storage.put("a/2026/01/big.bin", stream(big)) == big
    assert await collect(storage.get("a/2026/01/small.bin")) == b"hello"
    sha, size, largest = hashlib.sha256(), 0, 0
    async with aclosing(storage.get("a/2026/01/big.bin")) as chunks:
        async for chunk in chunks:
            sha.update(chunk)
            size += len(chunk)
            largest = max(largest, len(chunk))
    assert (size, sha.hexdigest()) == (big, digest_of_pattern(big))
    assert largest <= max(kind.part_size, 8 * MIB), "a read is streamed, not whole"
    info = await storage.stat("a/2026/01/big.bin")
    assert info is not None
    assert info.key == "a/2026/01/big.bin"
    assert info.size == big
    assert info.modified is not None
    assert await storage.stat("a/none") is None
    assert await keys(storage, "a/") == ["a/2026/01/big.bin", "a/2026/01/small.bin"]
    assert await keys(storage, "a/2026/01/s") == ["a/2026/01/small.bin"]
    assert await keys(storage, "nothing/") == []
    assert await storage.put("a/2026/01/small.bin", from_bytes(b"again")) == 5  # overwrite
    assert await collect(storage.get("a/2026/01/small.bin")) == b"again"
    await storage.delete("a/2026/01/small.bin")
    await storage.delete("a/2026/01/small.bin")  # idempotent
    assert await storage.stat("a/2026/01/small.bin") is None
    with pytest.raises(ObjectNotFound):
        await collect(storage.get("a/2026/01/small.bin"))
    assert kind.name in storage.describe("a/x") or "://" in storage.describe("a/x")
    if kind.pending is not None:
        assert await kind.pending(storage) == []


async def check_empty_object(kind: StoreKind) -> None:
    storage = kind.make(None)
    await storage.prepare()
    assert await storage.put("e/empty.bin", from_bytes(b"")) == 0
    info = await storage.stat("e/empty.bin")
    assert info is not None
    assert info.size == 0
    assert await collect(storage.get("e/empty.bin")) == b""


async def check_bounded_memory(kind: StoreKind) -> None:
    """Writing and reading 6 parts holds a few parts at most, never the object."""
    storage = kind.make(None)
    await storage.prepare()
    total = 6 * kind.part_size
    bound = 4 * kind.part_size + 4 * MIB
    tracemalloc.start()
    try:
        assert await storage.put("m/big.bin", stream(total)) == total
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        size = 0
        async with aclosing(storage.get("m/big.bin")) as chunks:
            async for chunk in chunks:
                size += len(chunk)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == total
    assert put_peak < bound, f"put held {put_peak / MIB:.1f} MiB for {total / MIB:.0f} MiB"
    assert get_peak < bound, f"get held {get_peak / MIB:.1f} MiB for {total / MIB:.0f} MiB"


async def check_bad_keys(kind: StoreKind) -> None:
    storage = kind.make(None)
    for key in ("../escape", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(StorageError, match="Invalid storage key"):
            await storage.put(key, from_bytes(b"x"))
    # A listing never leaves the target's root (an SFTP prefix "/etc/" once listed /etc).
    for prefix in ("/", "/etc/", "../", "a/../../"):
        with pytest.raises(StorageError, match="Invalid storage key"):
            await keys(storage, prefix)


async def check_failed_stream_leaves_nothing(kind: StoreKind) -> None:
    """A source that dies mid-stream: its error passes, nothing is left (nor pending)."""
    storage = kind.make(None)
    await storage.prepare()
    for size in (10, kind.part_size + 1):
        with pytest.raises(RuntimeError, match="source died"):
            await storage.put("f/obj.bin", failing(os.urandom(size)))
        assert await storage.stat("f/obj.bin") is None
        assert await keys(storage, "f/") == []
        assert await pending_now(kind, storage) in (None, [])


async def check_failed_overwrite_keeps_old(kind: StoreKind) -> None:
    """A write that fails over an existing object leaves that object as it was."""
    storage = kind.make(None)
    await storage.prepare()
    await storage.put("o/obj.bin", from_bytes(b"the old bytes"))
    with pytest.raises(RuntimeError, match="source died"):
        await storage.put("o/obj.bin", failing(os.urandom(kind.part_size + 1)))
    assert await collect(storage.get("o/obj.bin")) == b"the old bytes"
    info = await storage.stat("o/obj.bin")
    assert info is not None
    assert info.size == len(b"the old bytes")


async def check_invisible_until_complete(kind: StoreKind) -> None:
    """While parts are written, the key is neither stat-able nor listed."""
    storage = kind.make(None)
    await storage.prepare()
    gate = Gate(hold_at=2 * kind.part_size + MIB)
    total = 3 * kind.part_size
    task = asyncio.create_task(storage.put("v/obj.bin", stream(total, gate)))
    try:
        await asyncio.wait_for(gate.reached.wait(), 60)
        await eventually_pending(kind, storage, "v/obj.bin")
        assert await storage.stat("v/obj.bin") is None
        assert await keys(storage, "v/") == []
    finally:
        gate.release.set()
    assert await task == total
    assert await keys(storage, "v/") == ["v/obj.bin"]
    assert await pending_now(kind, storage) in (None, [])


async def check_cancel_aborts(kind: StoreKind) -> None:
    """A put cancelled mid-way (a job cancelled) leaves no object and no pending upload."""
    storage = kind.make(None)
    await storage.prepare()
    gate = Gate(hold_at=2 * kind.part_size + MIB)
    task = asyncio.create_task(storage.put("c/obj.bin", stream(3 * kind.part_size, gate)))
    await asyncio.wait_for(gate.reached.wait(), 60)
    await eventually_pending(kind, storage, "c/obj.bin")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await storage.stat("c/obj.bin") is None
    assert await keys(storage, "c/") == []
    assert await pending_now(kind, storage) in (None, [])


class StoreContract:
    """Every check above as a test; a kind's module subclasses it (`class TestContract`)
    beside its `kind` fixture."""

    async def test_round_trip(self, kind: StoreKind) -> None:
        await check_round_trip(kind)

    async def test_empty_object(self, kind: StoreKind) -> None:
        await check_empty_object(kind)

    async def test_bounded_memory(self, kind: StoreKind) -> None:
        await check_bounded_memory(kind)

    async def test_bad_keys(self, kind: StoreKind) -> None:
        await check_bad_keys(kind)

    async def test_failed_stream_leaves_nothing(self, kind: StoreKind) -> None:
        await check_failed_stream_leaves_nothing(kind)

    async def test_failed_overwrite_keeps_old(self, kind: StoreKind) -> None:
        await check_failed_overwrite_keeps_old(kind)

    async def test_invisible_until_complete(self, kind: StoreKind) -> None:
        await check_invisible_until_complete(kind)

    async def test_cancel_aborts(self, kind: StoreKind) -> None:
        await check_cancel_aborts(kind)

    async def test_discard_incomplete(self, kind: StoreKind) -> None:
        await check_discard_incomplete(kind)

    async def test_endpoint_cut_mid_upload(self, kind: StoreKind) -> None:
        await check_endpoint_cut_mid_upload(kind)

    async def test_ranged_read(self, kind: StoreKind) -> None:
        await check_ranged_read(kind)

    async def test_transient_errors_retried(self, kind: StoreKind, settings: Settings) -> None:
        await check_transient_errors_retried(kind, settings)

    async def test_wrong_credentials(self, kind: StoreKind) -> None:
        await check_wrong_credentials(kind)

    async def test_corrupted_object_fails_verify(self, kind: StoreKind, settings: Settings,
                                                 admin: Account) -> None:
        await check_corrupted_object_fails_verify(kind, settings, admin)

    @pytest.mark.parametrize("primary_is_kind", [True, False])
    async def test_copy_serves_restore(self, kind: StoreKind, settings: Settings,
                                       admin: Account, primary_is_kind: bool) -> None:
        await check_copy_serves_restore(kind, settings, admin, primary_is_kind)


__all__ = [
    "MIB", "Gate", "RangedStorage", "StoreContract", "StoreKind", "check_bad_keys",
    "check_bounded_memory", "check_cancel_aborts", "check_copy_serves_restore",
    "check_corrupted_object_fails_verify", "check_discard_incomplete", "check_empty_object",
    "check_endpoint_cut_mid_upload", "check_failed_overwrite_keeps_old",
    "check_failed_stream_leaves_nothing", "check_invisible_until_complete", "check_ranged_read",
    "check_round_trip", "check_transient_errors_retried", "check_wrong_credentials",
    "digest_of_pattern", "eventually_pending", "failing", "keys", "pattern", "pending_now",
    "stream",
]
