"""The checks every storage kind must pass (derived from the S3 tests), as functions taking
a `StoreKind` (how to reach that kind, real services only), and as `StoreContract`, the
tests a kind's module gets once by subclassing it:

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
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pytest

from app.config import Settings
from app.models.backup import Backup, VerificationState
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.services.artifacts.stages import Chunks, collect, from_bytes
from app.services.databases.backup import back_up
from app.services.databases.restore import restore
from app.services.databases.verify import verify
from app.services.jobs.runner import Progress
from app.services.storage import Storage, StorageTargets
from app.services.storage.base import ObjectNotFound, StorageError
from tests.support.accounts import Account
from tests.support.proxy import CuttingProxy
from tests.support.settings import RUN
from tests.support.storage_targets import damage, local_target, pg_source, with_targets
from tests.support.store_streams import (
    MIB,
    Gate,
    digest_of_pattern,
    failing,
    pattern,
    stream,
)


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


async def check_discard_incomplete(kind: StoreKind) -> None:
    """Unfinished writes left behind (as by a killed process) are found and removed, by
    key and by age, without touching finished objects."""
    storage = kind.make(None)
    await storage.prepare()
    await storage.put("d/kept.bin", from_bytes(b"kept"))
    proxy = CuttingProxy(kind.upstream_port)
    port = await proxy.start()
    via_proxy = kind.make(f"http://127.0.0.1:{port}")
    gate = Gate(hold_at=kind.part_size + MIB)
    task = asyncio.create_task(via_proxy.put("d/left.bin", stream(2 * kind.part_size, gate)))
    try:
        await asyncio.wait_for(gate.reached.wait(), 60)
        await eventually_pending(kind, storage, "d/left.bin")
        proxy.block()  # the "process" loses its endpoint: its abort cannot land
        gate.release.set()
        with pytest.raises(StorageError):
            await task
    finally:
        await proxy.close()
    assert await storage.stat("d/left.bin") is None
    left = await pending_now(kind, storage)
    if left is not None:
        assert left in ([], ["d/left.bin"])
        assert await storage.discard_incomplete("d/left.bin") == len(left)
        assert await kind.pending(storage) == []  # type: ignore[misc]
    assert await storage.discard_incomplete("d/left.bin") == 0
    assert await storage.discard_stale_partials(older_than_seconds=0) == 0
    assert await collect(storage.get("d/kept.bin")) == b"kept"


async def check_endpoint_cut_mid_upload(kind: StoreKind) -> None:
    """The endpoint goes away after a part: a StorageError, no object; what the abort
    could not reach is swept by age."""
    direct = kind.make(None)
    await direct.prepare()
    proxy = CuttingProxy(kind.upstream_port, cut_after_bytes=kind.part_size + 65536)
    port = await proxy.start()
    via_proxy = kind.make(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(StorageError, match="Upload to "):
            await via_proxy.put("gone/obj.bin", stream(3 * kind.part_size + 12345))
    finally:
        await proxy.close()
    assert proxy.cut.is_set()
    assert await direct.stat("gone/obj.bin") is None
    assert await keys(direct, "gone/") == []
    stale = await pending_now(kind, direct)
    if stale is not None:
        assert stale in ([], ["gone/obj.bin"])
        assert await direct.discard_stale_partials(older_than_seconds=0) == len(stale)
        assert await kind.pending(direct) == []  # type: ignore[misc]


async def check_ranged_read(kind: StoreKind) -> None:
    """Byte ranges across a part boundary, to the end, and an early close."""
    storage = kind.make(None)
    await storage.prepare()
    assert isinstance(storage, RangedStorage), f"{kind.name} has no get_range"
    total = 2 * kind.part_size + 100
    await storage.put("r/obj.bin", stream(total))
    whole = b"".join([pattern(i) for i in range(total // MIB + 1)])[:total]
    start = kind.part_size - 1000
    assert await collect(storage.get_range("r/obj.bin", start, 5000)) == whole[start:start + 5000]
    assert await collect(storage.get_range("r/obj.bin", total - 10)) == whole[-10:]
    assert await collect(storage.get_range("r/obj.bin", 0, 1)) == whole[:1]
    with pytest.raises(ObjectNotFound):
        await collect(storage.get_range("r/none.bin", 0, 10))
    async with aclosing(storage.get("r/obj.bin")) as chunks:
        first = await anext(chunks)  # leaving early must not read (or hang on) the rest
    assert whole.startswith(first)


async def check_transient_errors_retried(kind: StoreKind, settings: Settings) -> None:
    """Through build_target: an unreachable endpoint is a transient StorageError, which
    the retry wrapper repeats until the endpoint is back."""
    proxy = CuttingProxy(kind.upstream_port)
    port = await proxy.start()
    direct = with_targets(settings, [kind.target("far", None)], default="far", retries=0)
    store = StorageTargets.from_settings(direct).default
    await store.prepare()
    await store.put("retry/a", from_bytes(b"hello"))
    via = kind.target("far", f"http://127.0.0.1:{port}")
    try:
        proxy.block()
        bare = StorageTargets.from_settings(
            with_targets(settings, [via], default="far", retries=0)).default
        calls = (lambda: bare.stat("retry/a"), lambda: bare.delete("retry/a"),
                 lambda: keys(bare, "retry/"))
        for call in calls:
            with pytest.raises(StorageError) as caught:
                await call()
            assert caught.value.transient, caught.value.message
        retrying = StorageTargets.from_settings(
            with_targets(settings, [via], default="far", retries=6,
                         retry_base_seconds=0.25)).default
        asyncio.get_running_loop().call_later(1.5, proxy.unblock)
        info = await retrying.stat("retry/a")
        assert info is not None
        assert info.size == 5
        proxy.block()
        asyncio.get_running_loop().call_later(1.5, proxy.unblock)
        assert await keys(retrying, "retry/") == ["retry/a"]
    finally:
        await proxy.close()


async def check_wrong_credentials(kind: StoreKind) -> None:
    """Wrong credentials: a clear, permanent error that never shows the secret."""
    storage = kind.wrong_credentials()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: storage.put("w/obj.bin", from_bytes(b"x")),
        lambda: storage.stat("w/obj.bin"),
        lambda: keys(storage, "w/"),
        lambda: collect(storage.get("w/obj.bin")),
    ]
    for call in calls:
        with pytest.raises(StorageError) as caught:
            await call()
        error = caught.value
        text = f"{error.message} {error.details!r} {error!r}"
        assert not error.transient, error.message
        assert kind.wrong_secret not in text
        assert any(word in error.message.lower() for word in kind.auth_words), error.message


async def _backup(settings: Settings, admin: Account, source: str = "pg") -> Backup:
    targets = StorageTargets.from_settings(settings)
    await targets.prepare()
    return await back_up(settings, targets, Progress(),
                         DatabaseBackupCreate(source=source, tables=["authors"]),
                         admin=admin.user.id)


async def check_corrupted_object_fails_verify(kind: StoreKind, settings: Settings,
                                              admin: Account) -> None:
    """A backup on the kind verifies; one flipped byte is then caught by verify."""
    ours = with_targets(settings, [kind.target("far", None)], default="far")
    backup = await _backup(ours, admin)
    assert (backup.storage_target, backup.storage_backend) == ("far", kind.name)
    targets = StorageTargets.from_settings(ours)
    good = await verify(ours, targets, backup.id, Progress())  # type: ignore[arg-type]
    assert good.state is VerificationState.passed, good.error
    await damage(targets.default, str(backup.storage_key))
    bad = await verify(ours, targets, backup.id, Progress())  # type: ignore[arg-type]
    assert bad.state is VerificationState.failed
    assert bad.sha256_ok is False
    assert bad.size_ok is True


async def check_copy_serves_restore(kind: StoreKind, settings: Settings, admin: Account,
                                    primary_is_kind: bool) -> None:
    """A copy on (or from) the kind: made, checked, and read when the primary is damaged."""
    names = ("far", "disk") if primary_is_kind else ("disk", "far")
    primary, copy = names
    source = pg_source(f"{kind.name}-copy-{primary}-{RUN}"[:60], copy_targets=[copy])
    ours = with_targets(settings, [local_target("disk"), kind.target("far", None)],
                        default=primary, sources=[source])
    backup = await _backup(ours, admin, source=source.name)
    assert [(c.target, c.sha256, c.verification.state) for c in backup.copies] == [
        (copy, backup.sha256, VerificationState.passed)]
    targets = StorageTargets.from_settings(ours)
    assert await targets.named(copy).stat(str(backup.manifest_key)) is not None
    await damage(targets.named(primary), str(backup.storage_key))
    database = f"bv_{kind.name}_copy_{primary}_{RUN}"
    done = await restore(ours, targets, backup.id,  # type: ignore[arg-type]
                         RestoreRequest(target_database=database), Progress(), admin.user.id)
    assert done["restoredFromCopy"] == copy
    assert [c["name"] for c in done["counts"]] == ["public.authors"]


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
    "digest_of_pattern", "failing", "pattern", "stream",
]
