"""Azure Blob targets against a real Azurite: the storage contract every kind passes, and
what is Azure's own (uncommitted blocks, SAS tokens, settings)."""

import asyncio
import hashlib
import os
import tracemalloc
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from pydantic import ValidationError

from app.config import Settings, StorageSettings, StorageTargetSettings
from app.config.settings import public_view
from app.services.artifacts.stages import collect, from_bytes
from app.services.storage import Storage, StorageTargets
from app.services.storage.azure import (
    MIN_BLOCK,
    PUT_ATTEMPTS,
    AzureBlobStorage,
    account_name_of,
    block_size_for,
)
from app.services.storage.base import StorageError
from app.services.storage.wrappers import StorageWrapper
from tests.support import store_contract as contract
from tests.support.azure_faults import BlockFaultProxy
from tests.support.settings import RUN
from tests.support.storage_targets import with_targets

AZURE_URL = os.environ.get("BACKVAULT_AZURE_ACCOUNT_URL",
                           "http://127.0.0.1:50110/devstoreaccount1")
AZURE_KEY = os.environ.get(
    "BACKVAULT_AZURE_ACCOUNT_KEY",
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
CONTAINER = "backvault-test"
WRONG_KEY = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="  # base64, like a real key
pytestmark = pytest.mark.usefixtures("source_databases")


def _with_port(endpoint: str | None) -> str:
    if endpoint is None:
        return AZURE_URL
    return endpoint.rstrip("/") + "/" + account_name_of(AZURE_URL)


def azure_kind() -> contract.StoreKind:
    prefix = f"t-{RUN}-{uuid.uuid4().hex[:8]}"

    def make(endpoint: str | None) -> Storage:
        return AzureBlobStorage(_with_port(endpoint), CONTAINER, prefix=prefix,
                                account_key=AZURE_KEY, max_object_bytes=1024 ** 3)

    def target(name: str, endpoint: str | None) -> dict[str, Any]:
        return {"name": name, "kind": "azure", "azure_account_url": _with_port(endpoint),
                "azure_container": CONTAINER, "azure_account_key": AZURE_KEY,
                "azure_prefix": prefix}

    async def pending(storage: Storage) -> list[str]:
        assert isinstance(storage, AzureBlobStorage)
        return await storage.pending_uploads()

    def wrong() -> Storage:
        return AzureBlobStorage(AZURE_URL, CONTAINER, prefix=prefix, account_key=WRONG_KEY)

    port = int(AZURE_URL.split(":")[2].split("/")[0])
    return contract.StoreKind(name="azure", make=make, upstream_port=port,
                              part_size=MIN_BLOCK, target=target, wrong_credentials=wrong,
                              wrong_secret=WRONG_KEY, pending=pending)


@pytest.fixture
def kind() -> contract.StoreKind:
    return azure_kind()


class TestContract(contract.StoreContract):
    """Azure: invisible until the block list is committed; cancel drops staged blocks."""


async def _via(proxy: BlockFaultProxy, kind: contract.StoreKind, in_flight: int = 3
               ) -> tuple[AzureBlobStorage, AzureBlobStorage]:
    """The kind's place through the proxy with `in_flight` blocks at once, and directly
    (to inspect it)."""
    port = await proxy.start()
    direct = kind.make(None)
    assert isinstance(direct, AzureBlobStorage)
    through = AzureBlobStorage(_with_port(f"http://127.0.0.1:{port}"), CONTAINER,
                               prefix=direct.prefix, account_key=AZURE_KEY,
                               max_object_bytes=1024 ** 3, blocks_in_flight=in_flight)
    assert through.block_size == MIN_BLOCK
    await direct.prepare()
    return through, direct


@pytest.mark.parametrize("in_flight", [1, 4])
async def test_put_holds_blocks_in_flight_plus_one(kind: contract.StoreKind,
                                                   in_flight: int) -> None:
    """A put holds (in flight + 1) blocks and a little: no joined copy of a block, no
    copy of it in aiohttp's or the transport's buffers."""
    store = AzureBlobStorage(AZURE_URL, CONTAINER, prefix=f"mem-{RUN}-{uuid.uuid4().hex[:6]}",
                             account_key=AZURE_KEY, max_object_bytes=1024 ** 3,
                             blocks_in_flight=in_flight)
    await store.prepare()
    total = 8 * MIN_BLOCK
    tracemalloc.start()
    try:
        assert await store.put("m/obj.bin", contract.stream(total)) == total
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = (in_flight + 1) * MIN_BLOCK + in_flight * contract.MIB + 2 * contract.MIB
    assert peak < bound, f"held {peak / contract.MIB:.1f} MiB"
    await store.delete("m/obj.bin")


async def mixed_chunks(total: int) -> AsyncGenerator[bytes, None]:
    """Deterministic bytes in chunks of very different sizes, tiny ones in runs."""
    sizes = [3, 100, 5000, 70_000, 1_000_003, 17, 40_000, 300_000]
    sent = index = 0
    while sent < total:
        size = min(sizes[index % len(sizes)], total - sent)
        yield bytes((sent + i) % 251 for i in range(size))
        sent += size
        index += 1


async def test_chunks_of_any_size_round_trip(kind: contract.StoreKind) -> None:
    """Tiny and large chunks go out as they came (tiny ones gathered), in order."""
    store = AzureBlobStorage(AZURE_URL, CONTAINER, prefix=f"mix-{RUN}-{uuid.uuid4().hex[:6]}",
                             account_key=AZURE_KEY, max_object_bytes=1024 ** 3,
                             blocks_in_flight=3)
    await store.prepare()
    total = 2 * MIN_BLOCK + 777_777
    expected = hashlib.sha256()
    async for chunk in mixed_chunks(total):
        expected.update(chunk)
    assert await store.put("x/obj.bin", mixed_chunks(total)) == total
    got = hashlib.sha256(await collect(store.get("x/obj.bin")))
    assert got.hexdigest() == expected.hexdigest()
    await store.delete("x/obj.bin")


async def test_blocks_landing_out_of_order_commit_in_stream_order(
        kind: contract.StoreKind) -> None:
    """The first block held mid-request while the next ones land: the blob still reads
    back in stream order."""
    proxy = BlockFaultProxy(kind.upstream_port, hold=frozenset({0}))
    store, direct = await _via(proxy, kind)
    total = 5 * MIN_BLOCK + 100
    try:
        task = asyncio.create_task(store.put("order/obj.bin", contract.stream(total)))
        await proxy.until(lambda: proxy.held == 1 and {1, 2} <= set(proxy.forwarded))
        proxy.release.set()
        assert await task == total
    finally:
        await proxy.close()
    assert proxy.forwarded.index(0) > proxy.forwarded.index(2)
    sha = hashlib.sha256(await collect(direct.get("order/obj.bin")))
    assert sha.hexdigest() == contract.digest_of_pattern(total)


async def test_failed_middle_block_leaves_nothing(kind: contract.StoreKind) -> None:
    """Three blocks in flight, the middle one failing on every attempt while the others
    are mid-request: the put fails, commits nothing and drops every block it staged
    (those sent beside and after the failing one too)."""
    proxy = BlockFaultProxy(kind.upstream_port, cut=frozenset({1}), hold=frozenset({0, 2}))
    store, direct = await _via(proxy, kind)
    try:
        task = asyncio.create_task(store.put("mid/obj.bin", contract.stream(6 * MIN_BLOCK)))
        await proxy.until(lambda: proxy.held == 2 and proxy.cuts >= 1)
        proxy.release.set()
        with pytest.raises(StorageError, match="Upload to ") as caught:
            await task
    finally:
        await proxy.close()
    assert caught.value.transient  # a cut connection: the retry wrapper may run it again
    assert proxy.cuts == PUT_ATTEMPTS
    assert {0, 2} <= set(proxy.forwarded)  # blocks beside it were staged, then dropped
    assert await direct.stat("mid/obj.bin") is None
    assert await contract.keys(direct, "mid/") == []
    assert await direct.pending_uploads() == []
    assert await direct.discard_stale_partials(older_than_seconds=0) == 0
    assert await direct.pending_uploads() == []


async def test_a_block_cut_once_is_resent_whole(kind: contract.StoreKind) -> None:
    """The SDK's retry of a block whose request was cut part-way sends the whole block
    again (its body starts over), so the blob is complete."""
    proxy = BlockFaultProxy(kind.upstream_port, cut=frozenset({1}), cut_limit=1)
    store, direct = await _via(proxy, kind)
    total = 3 * MIN_BLOCK + 5
    try:
        assert await store.put("again/obj.bin", contract.stream(total)) == total
    finally:
        await proxy.close()
    assert proxy.cuts == 1
    assert proxy.forwarded.count(1) == 1
    sha = hashlib.sha256(await collect(direct.get("again/obj.bin")))
    assert sha.hexdigest() == contract.digest_of_pattern(total)
    assert await direct.pending_uploads() == []


async def test_cancel_with_blocks_in_flight_leaves_nothing(kind: contract.StoreKind) -> None:
    """A put cancelled while three blocks are mid-request: they land within the grace,
    then every staged block is dropped, so none is left behind the drop."""
    proxy = BlockFaultProxy(kind.upstream_port, hold=frozenset({1, 2, 3}))
    store, direct = await _via(proxy, kind)
    try:
        task = asyncio.create_task(store.put("cx/obj.bin", contract.stream(8 * MIN_BLOCK)))
        await proxy.until(lambda: proxy.held == 3)
        await contract.eventually_pending(kind, direct, "cx/obj.bin")  # block 0 staged
        task.cancel()
        asyncio.get_running_loop().call_later(0.5, proxy.release.set)
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await proxy.close()
    assert sorted(proxy.forwarded) == [0, 1, 2, 3]  # the held ones reached the server
    assert await direct.stat("cx/obj.bin") is None
    assert await contract.keys(direct, "cx/") == []
    assert await direct.pending_uploads() == []
    assert await direct.discard_stale_partials(older_than_seconds=0) == 0


def _sas(permission: ContainerSasPermissions) -> str:
    return generate_container_sas(account_name_of(AZURE_URL), CONTAINER, account_key=AZURE_KEY,
                                  permission=permission,
                                  expiry=datetime.now(UTC) + timedelta(hours=1))


async def test_sas_token_round_trip(kind: contract.StoreKind) -> None:
    await kind.make(None).prepare()  # the container exists; a container SAS cannot make it
    token = _sas(ContainerSasPermissions(read=True, add=True, create=True, write=True,
                                         delete=True, list=True))
    store = AzureBlobStorage(AZURE_URL, CONTAINER, prefix=f"sas-{RUN}-{uuid.uuid4().hex[:6]}",
                             sas_token=token, max_object_bytes=1024 ** 3)
    await store.prepare()
    size = 2 * MIN_BLOCK + 10
    assert await store.put("s/big.bin", contract.stream(size)) == size
    assert len(await collect(store.get("s/big.bin"))) == size
    assert [o.key async for o in store.list_objects("s/")] == ["s/big.bin"]
    await store.delete("s/big.bin")
    assert await store.stat("s/big.bin") is None


async def test_read_only_sas_cannot_write(kind: contract.StoreKind) -> None:
    await kind.make(None).prepare()
    token = _sas(ContainerSasPermissions(read=True, list=True))
    store = AzureBlobStorage(AZURE_URL, CONTAINER, prefix=f"ro-{RUN}", sas_token=token)
    with pytest.raises(StorageError) as caught:
        await store.put("r/obj.bin", from_bytes(b"x"))
    assert not caught.value.transient
    assert "access denied" in caught.value.message
    signature = dict(p.split("=", 1) for p in token.split("&"))["sig"]
    assert signature not in caught.value.message
    assert [o.key async for o in store.list_objects("r/")] == []  # reading is allowed


async def test_staged_blocks_beside_a_finished_blob_leave_it_alone(
        kind: contract.StoreKind) -> None:
    """A failed overwrite's blocks stay uncommitted (Azure drops them after 7 days); the
    finished blob is never replaced by an empty one to clean them."""
    store = kind.make(None)
    assert isinstance(store, AzureBlobStorage)
    await store.prepare()
    await store.put("b/obj.bin", contract.stream(MIN_BLOCK + 5))
    with pytest.raises(RuntimeError, match="source died"):
        await store.put("b/obj.bin", contract.failing(os.urandom(MIN_BLOCK + 1)))
    assert await store.discard_incomplete("b/obj.bin") == 0
    assert await store.discard_stale_partials(0) == 0
    info = await store.stat("b/obj.bin")
    assert info is not None
    assert info.size == MIN_BLOCK + 5
    assert await store.pending_uploads() == []


def test_targets_need_their_fields() -> None:
    base = {"name": "az", "kind": "azure", "azure_account_url": AZURE_URL,
            "azure_container": CONTAINER}
    assert StorageTargetSettings.model_validate({**base, "azure_account_key": AZURE_KEY})
    assert StorageTargetSettings.model_validate({**base, "azure_sas_token": "sv=x&sig=y"})
    with pytest.raises(ValidationError, match="azure_account_key or azure_sas_token"):
        StorageTargetSettings.model_validate(base)
    with pytest.raises(ValidationError, match="needs azure_container"):
        StorageTargetSettings.model_validate({"name": "az", "kind": "azure",
                                              "azure_account_url": AZURE_URL,
                                              "azure_account_key": AZURE_KEY})
    with pytest.raises(ValidationError, match="not both") as caught:
        StorageTargetSettings.model_validate({**base, "azure_account_key": AZURE_KEY,
                                              "azure_sas_token": "sv=x&sig=secret-sig"})
    assert AZURE_KEY not in str(caught.value)
    assert "secret-sig" not in str(caught.value)
    with pytest.raises(ValidationError, match="named target"):
        StorageSettings.model_validate({"backend": "azure"})
    with pytest.raises(ValidationError, match="no query string") as caught:
        StorageTargetSettings.model_validate({**base, "azure_account_key": AZURE_KEY,
                                              "azure_account_url": AZURE_URL
                                              + "?sv=2024&sig=leaked-sig"})
    assert "leaked-sig" not in str(caught.value)
    for bad in (0, 17):
        with pytest.raises(ValidationError, match="azure_blocks_in_flight"):
            StorageTargetSettings.model_validate({**base, "azure_account_key": AZURE_KEY,
                                                  "azure_blocks_in_flight": bad})


def test_config_view_hides_the_key_and_the_token() -> None:
    target = StorageTargetSettings.model_validate({
        "name": "az", "kind": "azure", "azure_account_url": AZURE_URL,
        "azure_container": CONTAINER, "azure_account_key": AZURE_KEY})
    view = public_view(target)
    assert view["azure_account_key"] == "<redacted>"
    assert view["azure_sas_token"] is None
    assert AZURE_KEY not in repr(view)


def test_build_target_makes_a_wrapped_azure_storage(settings: Settings) -> None:
    ours = with_targets(settings, [azure_kind().target("far", None)], default="far")
    store = StorageTargets.from_settings(ours).default
    assert store.name == "azure"
    assert isinstance(store, StorageWrapper)
    azure = store.unwrapped()
    assert isinstance(azure, AzureBlobStorage)
    assert azure.blocks_in_flight == 2  # the default
    four = with_targets(settings, [{**azure_kind().target("far", None),
                                    "azure_blocks_in_flight": 4}], default="far")
    wrapped = StorageTargets.from_settings(four).default
    assert isinstance(wrapped, StorageWrapper)
    azure = wrapped.unwrapped()
    assert isinstance(azure, AzureBlobStorage)
    assert azure.blocks_in_flight == 4
    assert store.describe("a/b").startswith(f"{AZURE_URL}/{CONTAINER}/t-")


def test_account_names_and_block_sizes() -> None:
    assert account_name_of("https://acct1.blob.core.windows.net") == "acct1"
    assert account_name_of("http://127.0.0.1:10000/devstoreaccount1") == "devstoreaccount1"
    assert block_size_for(1024 ** 3) == MIN_BLOCK
    for size in (1024 ** 4, 5 * 1024 ** 4):
        block = block_size_for(size)
        assert block % (1024 * 1024) == 0
        assert block * 50_000 >= size
