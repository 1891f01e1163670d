"""Storage backends against a real directory and a real MinIO."""

import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.services.artifacts.stages import collect, from_bytes
from app.services.storage import LocalStorage, Storage
from app.services.storage.base import ObjectNotFound, StorageError
from app.services.storage.s3 import MIN_PART, S3Storage, part_size_for
from tests.support.proxy import CuttingProxy
from tests.support.settings import S3_ACCESS, S3_ENDPOINT, S3_SECRET

BIG = os.urandom(MIN_PART * 2 + 12345)  # three parts


def s3_storage(endpoint: str = S3_ENDPOINT, bucket: str = "backvault-test") -> S3Storage:
    return S3Storage(bucket, prefix="t-" + uuid.uuid4().hex[:8], endpoint_url=endpoint,
                     access_key=S3_ACCESS, secret_key=S3_SECRET,
                     max_object_bytes=1024 * 1024 * 1024)


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "store")
        return
    s3 = s3_storage()
    await s3.ensure_bucket()
    yield s3


async def failing(after: bytes) -> AsyncGenerator[bytes, None]:
    yield after
    raise RuntimeError("source died")


async def test_put_get_stat_list_delete(storage: Storage) -> None:
    assert await storage.put("a/2026/01/small.bin", from_bytes(b"hello")) == 5
    assert await storage.put("a/2026/01/big.bin", from_bytes(BIG)) == len(BIG)
    assert await collect(storage.get("a/2026/01/small.bin")) == b"hello"
    assert await collect(storage.get("a/2026/01/big.bin")) == BIG
    info = await storage.stat("a/2026/01/big.bin")
    assert info is not None
    assert info.size == len(BIG)
    assert await storage.stat("a/none") is None
    keys = [o.key async for o in storage.list_objects("a/")]
    assert keys == ["a/2026/01/big.bin", "a/2026/01/small.bin"]
    await storage.delete("a/2026/01/small.bin")
    await storage.delete("a/2026/01/small.bin")  # idempotent
    assert await storage.stat("a/2026/01/small.bin") is None
    with pytest.raises(ObjectNotFound):
        await collect(storage.get("a/2026/01/small.bin"))


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ""])
async def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(StorageError, match="Invalid storage key"):
        await storage.put(key, from_bytes(b"x"))


@pytest.mark.parametrize("size", [10, MIN_PART + 1])
async def test_failed_stream_leaves_nothing(storage: Storage, size: int) -> None:
    with pytest.raises(RuntimeError, match="source died"):
        await storage.put("f/obj.bin", failing(os.urandom(size)))
    assert await storage.stat("f/obj.bin") is None
    assert [o async for o in storage.list_objects("f/")] == []
    if isinstance(storage, LocalStorage):
        assert list((storage.root / "f").iterdir()) == []
    if isinstance(storage, S3Storage):
        assert await storage.pending_uploads() == []


async def test_s3_endpoint_going_away_mid_upload_leaves_no_object() -> None:
    direct = s3_storage()
    await direct.ensure_bucket()
    proxy = CuttingProxy(urlsplit(S3_ENDPOINT).port or 80, cut_after_bytes=MIN_PART + 65536)
    port = await proxy.start()
    via_proxy = S3Storage(direct.bucket, prefix=direct.prefix,
                          endpoint_url=f"http://127.0.0.1:{port}", access_key=S3_ACCESS,
                          secret_key=S3_SECRET, max_object_bytes=1024 ** 3)
    try:
        with pytest.raises(StorageError, match="Upload to s3://"):
            await via_proxy.put("gone/obj.bin", from_bytes(BIG))
    finally:
        await proxy.close()
    assert proxy.cut.is_set()
    assert await direct.stat("gone/obj.bin") is None
    # The abort could not reach the endpoint; the upload is invisible and is swept later.
    stale = await direct.pending_uploads()
    assert stale in ([], ["gone/obj.bin"])
    assert await direct.discard_stale_partials(older_than_seconds=0) == len(stale)
    assert await direct.pending_uploads() == []


def test_part_size_fits_any_object_in_10000_parts() -> None:
    assert part_size_for(1000 * 1024 * 1024) == MIN_PART
    for size in (100 * 1024 ** 3, 5 * 1024 ** 4):
        part = part_size_for(size)
        assert part % (1024 * 1024) == 0
        assert part * 10_000 >= size
        assert (part - 1024 * 1024) * 10_000 < size
