"""Azure Blob targets against a real Azurite: the storage contract every kind passes, and
what is Azure's own (uncommitted blocks, SAS tokens, settings)."""

import os
import uuid
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
    AzureBlobStorage,
    account_name_of,
    block_size_for,
)
from app.services.storage.base import StorageError
from app.services.storage.wrappers import StorageWrapper
from tests.support import store_contract as contract
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
    assert isinstance(store.unwrapped(), AzureBlobStorage)
    assert store.describe("a/b").startswith(f"{AZURE_URL}/{CONTAINER}/t-")


def test_account_names_and_block_sizes() -> None:
    assert account_name_of("https://acct1.blob.core.windows.net") == "acct1"
    assert account_name_of("http://127.0.0.1:10000/devstoreaccount1") == "devstoreaccount1"
    assert block_size_for(1024 ** 3) == MIN_BLOCK
    for size in (1024 ** 4, 5 * 1024 ** 4):
        block = block_size_for(size)
        assert block % (1024 * 1024) == 0
        assert block * 50_000 >= size
