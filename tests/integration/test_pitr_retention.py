"""Retention of PITR base backups as their own series, and the WAL they need, against the
catalog and local storage (records and small objects made directly, no pg_receivewal)."""

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId

from app.config import PitrSettings, Settings
from app.errors import ConflictError
from app.models.backup import Backup, BackupKind, BackupStatus
from app.models.common import utcnow
from app.models.requests import CleanupRequest
from app.models.wal import WalSegment
from app.services.artifacts.stages import from_bytes
from app.services.catalog.retention import (
    CleanupResult,
    apply_retention,
    good_in_series,
)
from app.services.catalog.trash import delete_backup
from app.services.pitr.walnames import DEFAULT_SEGMENT_SIZE, format_lsn, segment_name
from app.services.storage import LocalStorage
from tests.integration.test_cli_list import run_cli
from tests.support.accounts import Account

SIZE = DEFAULT_SEGMENT_SIZE
DUMP = ["pgdump", "zst", "age"]
BASE = ["pgbasetar", "zst", "age"]


def configured(settings: Settings, retention: dict[str, Any], **pitr: Any) -> Settings:
    return settings.model_copy(update={
        "retention": settings.retention.model_copy(update=retention),
        "pitr": PitrSettings(**pitr)})


async def stored(settings: Settings, key: str) -> int:
    return await LocalStorage(settings.storage.local_dir).put(key, from_bytes(key.encode()))


def exists(settings: Settings, key: str | None) -> bool:
    return key is not None and (LocalStorage(settings.storage.local_dir).root / key).exists()


async def backup(settings: Settings, admin: Account, source: str, days_old: float, *,
                 retention: int = 7, starts_at: int | None = None) -> Backup:
    """A dump, or with `starts_at` (a WAL segment number) a base backup, stored for real."""
    backup_id = PydanticObjectId()
    chain = DUMP if starts_at is None else BASE
    key = f"{source}/{backup_id}.{'.'.join(chain)}"
    options: dict[str, Any] = {}
    if starts_at is not None:
        options["pitr"] = {
            "timeline": 1, "startLsn": format_lsn(starts_at * SIZE + 40),
            "stopLsn": format_lsn(starts_at * SIZE + 4096),
            "startWal": segment_name(1, starts_at), "stopWal": segment_name(1, starts_at),
            "stopTime": (utcnow() - timedelta(days=days_old)).isoformat()}
    made = Backup(id=backup_id, admin=admin.user.id, source=source, kind=BackupKind("postgres"),
                  status=BackupStatus.completed, retention_days=retention,
                  created_at=utcnow() - timedelta(days=days_old), format_chain=chain,
                  storage_key=key, manifest_key=f"{source}/{backup_id}.manifest.json",
                  storage_target="local", options=options)
    made.stored_bytes = await stored(settings, key)
    await stored(settings, str(made.manifest_key))
    await made.insert()
    return made


async def wal(settings: Settings, source: str, numbers: range) -> list[WalSegment]:
    """Archived WAL segments of timeline 1, each a small stored object."""
    made = []
    for n in numbers:
        name = segment_name(1, n)
        key = f"wal/{source}/{name}.zst.age"
        segment = WalSegment(id=f"{source}:{name}", source=source, timeline=1, segment=name,
                             start_lsn=n * SIZE, end_lsn=(n + 1) * SIZE, size=SIZE,
                             stored_bytes=await stored(settings, key),
                             sha256=hashlib.sha256(key.encode()).hexdigest(),
                             storage_target="local", key=key, format_chain=["zst", "age"])
        await segment.insert()
        made.append(segment)
    return made


def rows(result: CleanupResult) -> dict[str, tuple[int, int, int]]:
    return {r.series: (r.good, r.deleted, r.good_left) for r in result.sources}


async def test_nightly_dumps_never_push_out_the_newest_base_backup(settings: Settings,
                                                                   admin: Account) -> None:
    config = configured(settings, {"min_count": 2, "max_count": 4}, base_min_count=1,
                        base_max_count=8)
    dumps = [await backup(config, admin, "pr-nightly", d + 0.2, retention=365)
             for d in range(7)]
    weekly = await backup(config, admin, "pr-nightly", 5.5, retention=365, starts_at=3)
    await wal(config, "pr-nightly", range(3, 5))

    done = await apply_retention(config, LocalStorage(config.storage.local_dir),
                                 CleanupRequest(source="pr-nightly"))
    assert {i.id for i in done.deleted} == {b.id for b in dumps[4:]}
    assert rows(done) == {"dumps": (7, 3, 4), "pitrBase": (1, 0, 1)}
    assert await Backup.get(weekly.id) is not None
    assert exists(config, weekly.storage_key)
    assert [exists(config, b.storage_key) for b in dumps] == [True] * 4 + [False] * 3


async def test_a_base_backup_never_counts_toward_the_dump_minimum(settings: Settings,
                                                                  admin: Account) -> None:
    config = configured(settings, {"min_count": 3}, base_min_count=1)
    dumps = [await backup(config, admin, "pr-minimum", 20 + d) for d in range(3)]  # expired
    await backup(config, admin, "pr-minimum", 10, starts_at=3)  # newer, expired too
    await wal(config, "pr-minimum", range(3, 4))  # restorable: it counts in its own series

    done = await apply_retention(config, LocalStorage(config.storage.local_dir),
                                 CleanupRequest(source="pr-minimum"))
    assert done.deleted == []
    assert {i.id for i in done.protected} >= {b.id for b in dumps}
    assert rows(done) == {"dumps": (3, 0, 3), "pitrBase": (1, 0, 1)}


async def test_base_backups_beyond_their_maximum_go_with_the_wal_they_alone_needed(
        settings: Settings, admin: Account) -> None:
    config = configured(settings, {"min_count": 0, "keep_weekly": 10}, base_min_count=2,
                        base_max_count=3)
    storage = LocalStorage(config.storage.local_dir)
    # Weekly base backups, oldest first, starting at WAL segments 2, 4, 6, 8 and 10.
    bases = [await backup(config, admin, "pr-max", 7 * (4 - w) + 1, retention=365,
                          starts_at=2 + 2 * w) for w in range(5)]
    segments = await wal(config, "pr-max", range(1, 13))

    preview = await apply_retention(config, storage,
                                    CleanupRequest(dry_run=True, source="pr-max"))
    assert {i.id for i in preview.deleted} == {bases[0].id, bases[1].id}  # the oldest two
    assert all("beyond the newest 3 good base backups" in i.reasons[0]
               for i in preview.deleted)
    assert preview.wal_segments_deleted == 5
    only, = preview.wal
    assert (only.source, only.segments, only.first, only.last, only.kept_from) == (
        "pr-max", 5, segment_name(1, 1), segment_name(1, 5), segment_name(1, 6))
    assert only.stored_bytes == sum(s.stored_bytes for s in segments[:5])
    # A dry run deletes nothing.
    assert await WalSegment.find({"source": "pr-max"}).count() == 12
    assert all(exists(config, s.key) for s in segments)
    assert all(exists(config, b.storage_key) for b in bases)

    done = await apply_retention(config, storage, CleanupRequest(source="pr-max"))
    assert done.errors == []
    assert {i.id for i in done.deleted} == {bases[0].id, bases[1].id}
    assert done.wal_segments_deleted == 5
    assert rows(done) == {"pitrBase": (5, 2, 3)}
    left = sorted(s.segment for s in await WalSegment.find({"source": "pr-max"}).to_list())
    assert left == [s.segment for s in segments[5:]]  # from the oldest kept one's start
    assert [exists(config, s.key) for s in segments] == [False] * 5 + [True] * 7
    assert [exists(config, b.storage_key) for b in bases] == [False] * 2 + [True] * 3


async def test_newest_base_backups_stay_past_their_retention_and_keep_their_wal(
        settings: Settings, admin: Account) -> None:
    config = configured(settings, {"min_count": 5}, base_min_count=2, base_max_count=8)
    storage = LocalStorage(config.storage.local_dir)
    # Every base backup is past its one day; only the oldest of the three goes.
    bases = [await backup(config, admin, "pr-min", days, retention=1, starts_at=start)
             for days, start in ((17, 2), (10, 5), (3, 8))]
    segments = await wal(config, "pr-min", range(2, 11))

    done = await apply_retention(config, storage, CleanupRequest(source="pr-min"))
    assert [i.id for i in done.deleted] == [bases[0].id]
    assert "past its retention of 1 days" in done.deleted[0].reasons[0]
    kept = {i.id: i.reasons for i in done.protected}
    assert set(kept) == {bases[1].id, bases[2].id}
    assert all("newest 2 good base backups (minimum)" in r[0] for r in kept.values())
    left = sorted(s.segment for s in await WalSegment.find({"source": "pr-min"}).to_list())
    assert left == [segment_name(1, n) for n in range(5, 11)]
    assert [exists(config, s.key) for s in segments] == [False] * 3 + [True] * 6

    again = await apply_retention(config, storage, CleanupRequest(source="pr-min"))
    assert again.deleted == []
    assert again.wal_segments_deleted == 0


@pytest.fixture
async def pg_wal_removed() -> AsyncIterator[None]:
    """WAL records this module makes for the shared `pg` source go when the test ends."""
    yield
    await WalSegment.find({"source": "pg"}).delete()


@pytest.mark.usefixtures("empty_catalog", "pg_wal_removed")
async def test_cleanup_preview_names_series_and_wal(client: httpx.AsyncClient, app: Any,
                                                    admin: Account) -> None:
    config: Settings = app.state.settings
    await WalSegment.find({"source": "pg"}).delete()
    await backup(config, admin, "pg", 1, starts_at=4)
    await wal(config, "pg", range(1, 7))

    preview = await client.post("/api/backups/cleanup", json={"dryRun": True, "source": "pg"},
                                headers=admin.headers)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["sources"] == [{"source": "pg", "series": "pitrBase", "good": 1,
                                "deleted": 0, "goodLeft": 1}]
    assert body["walSegmentsDeleted"] == 3
    assert body["wal"][0]["keptFrom"] == segment_name(1, 4)
    assert await WalSegment.find({"source": "pg"}).count() == 6


async def test_cli_cleanup_preview_names_the_wal_that_would_go(settings: Settings,
                                                               admin: Account) -> None:
    await backup(settings, admin, "pr-cli", 1, starts_at=3)
    await wal(settings, "pr-cli", range(1, 5))
    text = await run_cli(settings, "cleanup", "--dry-run", "--source", "pr-cli", columns=200)
    assert (f"WAL of pr-cli: 2 segment(s) would be deleted ({segment_name(1, 1)} to "
            f"{segment_name(1, 2)})") in text
    assert f"kept from {segment_name(1, 3)}" in text
    assert await WalSegment.find({"source": "pr-cli"}).count() == 4


async def test_a_base_backup_in_the_trash_keeps_its_wal(settings: Settings,
                                                        admin: Account) -> None:
    config = configured(settings, {"trash_days": 7}, base_min_count=1)
    storage = LocalStorage(config.storage.local_dir)
    trashed = await backup(config, admin, "pr-trash", 3, retention=365, starts_at=2)
    await backup(config, admin, "pr-trash", 1, retention=365, starts_at=5)
    await wal(config, "pr-trash", range(1, 7))
    await Backup.get_pymongo_collection().update_one(
        {"_id": trashed.id}, {"$set": {"status": "deleted", "deletedAt": utcnow(),
                                       "deletedBy": "root", "deletionReason": "by request"}})

    kept = await apply_retention(config, storage, CleanupRequest(source="pr-trash"))
    assert kept.deleted == []
    assert kept.wal_segments_deleted == 1  # only the one before the trashed backup's start
    assert await WalSegment.get(f"pr-trash:{segment_name(1, 2)}") is not None

    # Once the trash is emptied, the WAL only it needed goes in the same run.
    emptied = await apply_retention(config, storage, CleanupRequest(source="pr-trash"),
                                    now=utcnow() + timedelta(days=8))
    assert [i.id for i in emptied.deleted] == [trashed.id]
    assert emptied.wal_segments_deleted == 3
    left = sorted(s.segment for s in await WalSegment.find({"source": "pr-trash"}).to_list())
    assert left == [segment_name(1, n) for n in (5, 6)]


async def test_good_backups_are_counted_per_series(settings: Settings, admin: Account) -> None:
    for days in (1, 2, 3):
        await backup(settings, admin, "pr-count", days)
    newest = await backup(settings, admin, "pr-count", 0.5)
    restorable = await backup(settings, admin, "pr-count", 4, starts_at=2)
    await wal(settings, "pr-count", range(2, 4))
    await backup(settings, admin, "pr-count", 3, starts_at=9)  # its WAL is missing
    failed = await backup(settings, admin, "pr-count", 5, starts_at=1)
    await Backup.get_pymongo_collection().update_one({"_id": failed.id},
                                                     {"$set": {"status": "failed"}})
    assert await good_in_series("pr-count", "dumps") == 4
    assert await good_in_series("pr-count", "dumps", but=newest.id) == 3
    assert await good_in_series("pr-count", "pitrBase") == 1
    assert await good_in_series("pr-count", "pitrBase", but=restorable.id) == 0


async def test_deleting_keeps_each_series_minimum(settings: Settings, admin: Account) -> None:
    """A manual delete keeps the base backups' own minimum, and dumps do not lend to it."""
    config = configured(settings, {"min_count": 1}, base_min_count=1)
    storage = LocalStorage(config.storage.local_dir)
    dumps = [await backup(config, admin, "pr-delete", d) for d in (1, 2)]
    only_base = await backup(config, admin, "pr-delete", 3, starts_at=2)
    await wal(config, "pr-delete", range(2, 4))
    assert only_base.id is not None
    assert dumps[0].id is not None
    assert dumps[1].id is not None
    with pytest.raises(ConflictError, match="pitr.base_min_count = 1"):
        await delete_backup(config, storage, only_base.id, "tester")
    await delete_backup(config, storage, dumps[1].id, "tester")  # one dump is left
    with pytest.raises(ConflictError, match="retention.min_count = 1"):
        await delete_backup(config, storage, dumps[0].id, "tester")
    kept = await Backup.get(only_base.id)
    assert kept is not None
    assert kept.status is BackupStatus.completed


async def test_a_base_backup_whose_wal_is_broken_does_not_hold_up_the_minimum(
        settings: Settings, admin: Account) -> None:
    config = configured(settings, {"min_count": 1}, base_min_count=1)
    storage = LocalStorage(config.storage.local_dir)
    restorable = await backup(config, admin, "pr-delete-broken", 5, starts_at=2)
    broken = await backup(config, admin, "pr-delete-broken", 1, starts_at=9)
    await wal(config, "pr-delete-broken", range(2, 5))
    assert restorable.id is not None
    assert broken.id is not None
    # The newer base cannot be restored, so it does not stand in for the older one ...
    with pytest.raises(ConflictError, match="would leave 0 restorable base backup"):
        await delete_backup(config, storage, restorable.id, "tester")
    # ... and deleting it leaves as many restorable base backups as before.
    deleted = await delete_backup(config, storage, broken.id, "tester")
    assert deleted.status is BackupStatus.deleted


async def test_a_base_backup_whose_wal_is_still_arriving_holds_up_the_minimum(
        settings: Settings, admin: Account) -> None:
    config = configured(settings, {"min_count": 1}, base_min_count=1)
    storage = LocalStorage(config.storage.local_dir)
    just_taken = await backup(config, admin, "pr-arriving", 0, starts_at=2)  # no WAL yet
    assert just_taken.id is not None
    with pytest.raises(ConflictError, match="would leave 0 restorable base backup"):
        await delete_backup(config, storage, just_taken.id, "tester")
    # One rebuilt from a manifest without its PITR facts is not checked, and not a 500.
    await Backup.get_pymongo_collection().update_one({"_id": just_taken.id},
                                                     {"$set": {"options.pitr": {}}})
    with pytest.raises(ConflictError, match="pitr.base_min_count"):
        await delete_backup(config, storage, just_taken.id, "tester")


async def test_a_restorable_base_backup_outlives_newer_ones_whose_wal_is_broken(
        settings: Settings, admin: Account) -> None:
    config = configured(settings, {"min_count": 5}, base_min_count=1, base_max_count=8)
    storage = LocalStorage(config.storage.local_dir)
    # All past their one day; only the oldest has its WAL (2 to 4), the newer two none.
    restorable, *broken = [
        await backup(config, admin, "pr-broken", days, retention=1, starts_at=start)
        for days, start in ((17, 2), (10, 8), (3, 9))]
    await wal(config, "pr-broken", range(2, 5))

    done = await apply_retention(config, storage, CleanupRequest(source="pr-broken"))
    assert {i.id for i in done.deleted} == {b.id for b in broken}
    assert [i.id for i in done.protected] == [restorable.id]
    assert await Backup.get(restorable.id) is not None
    left = sorted(s.segment for s in await WalSegment.find({"source": "pr-broken"}).to_list())
    assert left == [segment_name(1, n) for n in range(2, 5)]
