"""The checks of the storage contract (store_contract.py) that clean up after crashes,
survive faults (a cut endpoint, transient errors, wrong credentials), read ranges, or go
through the whole service (verify, restore from a copy)."""

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import pytest

from app.config import Settings
from app.models.backup import Backup, VerificationState
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.services.artifacts.stages import collect, from_bytes
from app.services.databases.backup import back_up
from app.services.databases.restore import restore
from app.services.databases.verify import verify
from app.services.jobs.runner import Progress
from app.services.storage import StorageTargets
from app.services.storage.base import ObjectNotFound, StorageError
from tests.support.accounts import Account
from tests.support.proxy import CuttingProxy
from tests.support.settings import RUN
from tests.support.storage_targets import damage, local_target, pg_source, with_targets
from tests.support.store_kind import RangedStorage, StoreKind, eventually_pending, keys, pending_now
from tests.support.store_streams import (
    MIB,
    Gate,
    pattern,
    stream,
)


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
