"""Content objects remember their storage target (local disk and real MinIO, content from
the real Kubo): reads, reuse and cleanup go to the target an object was written to."""

from collections.abc import AsyncGenerator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.models.common import utcnow
from app.models.content import ContentItem, ContentObject, ItemStatus
from app.models.requests import CleanupRequest
from app.services.catalog.retention import apply_retention
from app.services.content.formats.car import CarReader
from app.services.content.restore import car_stream, readable_objects
from app.services.databases.verify import check_content_objects
from app.services.jobs.runner import Progress
from app.services.storage import StorageTargets
from app.services.storage.targets import UnknownTargetError
from tests.support.accounts import Account
from tests.support.content_targets import SOURCE, add_random, back_up_cids, content_on
from tests.support.storage_targets import local_target, s3_target


async def _car_roots_and_blocks(settings: Settings, targets: StorageTargets,
                                items: list[ContentItem]) -> tuple[set[str], int]:
    await readable_objects(settings, targets, items)
    data = b"".join([chunk async for chunk in car_stream(settings, targets, items)])

    async def body() -> AsyncGenerator[bytes, None]:
        yield data

    reader = CarReader(body())
    blocks = [b async for b in reader.blocks()]
    assert all(b.cid.matches(b.data) for b in blocks)
    return {str(r) for r in reader.roots}, len(blocks)


async def test_content_on_a_is_read_and_reused_while_default_is_b(
        settings: Settings, app: FastAPI) -> None:
    cid = await add_random()
    targets = [local_target("disk"), s3_target("minio")]
    on_disk = content_on(settings, targets, "disk", [cid])
    backup, (item,) = await back_up_cids(on_disk)
    assert (backup.storage_target, backup.storage_backend) == ("disk", "local")
    assert item.status is ItemStatus.new
    obj = await ContentObject.get(f"ipfs:{cid}")
    assert obj is not None
    assert (obj.storage_target, obj.storage_backend) == ("disk", "local")

    on_minio = content_on(settings, targets, "minio", [cid])
    minio = StorageTargets.from_settings(on_minio)
    assert await minio.default.stat(obj.storage_key) is None  # only on disk
    roots, blocks = await _car_roots_and_blocks(on_minio, minio, [item])
    assert roots == {cid}
    assert blocks > 1
    assert await check_content_objects(minio, backup.id, Progress()) == []  # type: ignore[arg-type]

    # A new backup with default B references the object on A; nothing fetched or written.
    again, (reused,) = await back_up_cids(on_minio)
    assert again.storage_target == "minio"
    assert reused.status is ItemStatus.existing
    assert await minio.default.stat(obj.storage_key) is None
    kept = await ContentObject.get(f"ipfs:{cid}")
    assert kept is not None
    assert kept.storage_target == "disk"

    # Unreferenced, it is deleted from A by cleanup run with default B.
    await ContentItem.find({"backupId": {"$in": [backup.id, again.id]}}).delete()
    await ContentObject.get_pymongo_collection().update_one(
        {"_id": f"ipfs:{cid}"}, {"$set": {"lastUsedAt": utcnow() - timedelta(days=1)}})
    result = await apply_retention(on_minio, minio, CleanupRequest(source=SOURCE))
    assert f"ipfs:{cid}" in result.content_objects_deleted
    assert await minio.named("disk").stat(obj.storage_key) is None
    assert await ContentObject.get(f"ipfs:{cid}") is None


async def test_content_on_an_unconfigured_target(settings: Settings, app: FastAPI,
                                                 client: httpx.AsyncClient,
                                                 superadmin: Account) -> None:
    cid = await add_random()
    disk = local_target("gone")
    backup, (item,) = await back_up_cids(content_on(settings, [disk], "gone", [cid]))
    assert item.status is ItemStatus.new

    only_minio = content_on(settings, [s3_target("minio")], "minio", [cid])
    minio = StorageTargets.from_settings(only_minio)
    with pytest.raises(UnknownTargetError, match="'gone'") as refused:
        await readable_objects(only_minio, minio, [item])
    assert (refused.value.status_code, refused.value.code) == (409, "unknown_storage_target")
    # Through the API (whose one target is "local"): refused before the stream starts.
    exported = await client.get(f"/api/backups/{backup.id}/export.car",
                                headers=superadmin.headers)
    assert exported.status_code == 409
    assert exported.json()["error"]["code"] == "unknown_storage_target"

    # A new backup fetches it again to the default, and the record points there.
    again, (fetched,) = await back_up_cids(only_minio)
    assert fetched.status is ItemStatus.new
    obj = await ContentObject.get(f"ipfs:{cid}")
    assert obj is not None
    assert obj.storage_target == "minio"
    assert await minio.default.stat(obj.storage_key) is not None
    roots, _ = await _car_roots_and_blocks(only_minio, minio, [fetched])
    assert roots == {cid}
    assert await check_content_objects(minio, again.id, Progress()) == []  # type: ignore[arg-type]
    await ContentItem.find({"backupId": {"$in": [backup.id, again.id]}}).delete()
