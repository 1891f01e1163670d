"""SFTP targets against a real OpenSSH server (scripts/services): the storage contract every
kind passes, and what is SFTP's own (the pinned host key, logins, partial files, fsync,
one reused connection)."""

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import Settings, StorageSettings, StorageTargetSettings
from app.config.settings import public_view
from app.models.backup import VerificationState
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.services.artifacts.stages import collect, from_bytes
from app.services.databases.backup import back_up
from app.services.databases.restore import restore
from app.services.databases.verify import verify
from app.services.jobs.runner import Progress
from app.services.storage import StorageTargets
from app.services.storage.base import StorageError
from app.services.storage.sftp import PARTIAL, SftpStorage
from app.services.storage.wrappers import RetryingStorage, StorageWrapper
from tests.support import store_contract as contract
from tests.support.accounts import Account
from tests.support.data import pg_snapshot
from tests.support.proxy import CuttingProxy
from tests.support.settings import PG_DB, RUN, pg_uri
from tests.support.sftp import (
    SFTP_PORT,
    SFTP_ROOT,
    known_host,
    locked_key,
    new_dir,
    other_host_line,
    other_key,
    password,
    sftp_kind,
    sftp_storage,
    sftp_target,
)
from tests.support.storage_targets import with_targets

pytestmark = pytest.mark.usefixtures("source_databases")


@pytest.fixture(scope="module", autouse=True)
def _run_directories_removed_at_end() -> Iterator[None]:
    yield
    for folder in SFTP_ROOT.glob(f"t-{RUN}-*"):
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def kind() -> contract.StoreKind:
    return sftp_kind()


# ---- the contract -------------------------------------------------------------------

class TestContract(contract.StoreContract):
    """SFTP: invisible until renamed; cancel removes the partial file."""


# ---- the host key is pinned, never learned --------------------------------------------

async def test_wrong_host_key_is_refused_and_nothing_is_sent() -> None:
    directory = new_dir()
    impostor = sftp_storage(directory, known_host=other_host_line())
    calls: list[Any] = [impostor.prepare, lambda: impostor.put("k/obj", from_bytes(b"x")),
                        lambda: impostor.stat("k/obj"), lambda: collect(impostor.get("k/obj"))]
    for call in calls:
        with pytest.raises(StorageError, match="is not the pinned sftp_known_host") as caught:
            await call()
        assert not caught.value.transient  # never retried into acceptance
    assert not (SFTP_ROOT / directory).exists()
    # Through the retry wrapper too: refused at once, not repeated.
    retrying = RetryingStorage(impostor, retries=3, base_seconds=5)
    started = time.monotonic()
    with pytest.raises(StorageError, match="host key"):
        await retrying.stat("k/obj")
    assert time.monotonic() - started < 4


async def test_host_key_lines_as_known_hosts_and_keyscan_write_them() -> None:
    line = known_host()  # "[127.0.0.1]:52222 ssh-ed25519 AAAA..." as ssh-keyscan prints
    bare_key = " ".join(line.split()[1:3])
    other = other_host_line()
    for pinned in (line, bare_key, f"# keys of the box\n{other}\n{line}\n"):
        storage = sftp_storage(new_dir(), known_host=pinned)
        await storage.prepare()
        await storage.close()
    with pytest.raises(StorageError, match="@revoked lines are not supported"):
        sftp_storage(new_dir(), known_host=f"@revoked * {bare_key}")
    with pytest.raises(StorageError, match="no public host key"):
        sftp_storage(new_dir(), known_host="[127.0.0.1]:52222")


@pytest.mark.parametrize("line", ["", "*", "[127.0.0.1]:52222", "accept-any",
                                  "ssh-ed25519 not-base64"])
def test_a_target_without_a_pinned_host_key_is_refused(line: str) -> None:
    with pytest.raises(ValidationError, match="sftp_known_host"):
        StorageTargetSettings.model_validate(sftp_target("far", sftp_known_host=line))


def test_target_settings_name_what_is_missing() -> None:
    with pytest.raises(ValidationError) as caught:
        StorageTargetSettings.model_validate({"name": "far", "kind": "sftp"})
    message = str(caught.value)
    for field in ("sftp_host", "sftp_user", "sftp_known_host", "sftp_dir",
                  "sftp_private_key or sftp_password"):
        assert field in message
    target = StorageTargetSettings.model_validate(sftp_target("far"))
    assert target.sftp_port == SFTP_PORT
    assert str(target.sftp_private_key) == "**********"
    default_port = {k: v for k, v in sftp_target("far").items() if k != "sftp_port"}
    assert StorageTargetSettings.model_validate(default_port).sftp_port == 22
    with pytest.raises(ValidationError, match="named target"):
        StorageSettings(backend="sftp")  # type: ignore[arg-type]


def test_effective_config_shows_no_sftp_secret(settings: Settings) -> None:
    phrase = "phrase-" + RUN
    target = sftp_target("far", sftp_password=password(), sftp_private_key=locked_key(phrase),
                         sftp_private_key_passphrase=phrase)
    ours = with_targets(settings, [target], default="far")
    view = public_view(ours)
    shown = view["storage"]["targets"][0]
    assert (shown["sftp_private_key"], shown["sftp_password"],
            shown["sftp_private_key_passphrase"]) == ("<redacted>",) * 3
    assert shown["sftp_known_host"] == target["sftp_known_host"]  # public: shown to check
    text = json.dumps(view)
    assert password() not in text
    assert phrase not in text
    assert target["sftp_private_key"].split("\n")[1] not in text


# ---- logins -------------------------------------------------------------------------

async def test_password_login_round_trip() -> None:
    storage = sftp_storage(new_dir(), password=password())
    await storage.prepare()
    assert await storage.put("p/obj.bin", from_bytes(b"by password")) == 11
    assert await collect(storage.get("p/obj.bin")) == b"by password"
    await storage.close()


async def test_unknown_private_key_is_refused_without_showing_it() -> None:
    key = other_key().export_private_key().decode()
    storage = sftp_storage(new_dir(), private_key=key)
    with pytest.raises(StorageError) as caught:
        await storage.prepare()
    error = caught.value
    assert not error.transient
    assert "authentication as 'backvault-sftp' failed" in error.message
    body = key.split("\n")[1]
    assert body not in f"{error.message} {error.details!r} {error!r}"


@pytest.mark.parametrize("key_format", ["openssh", "pkcs8-pem"])
async def test_a_private_key_with_a_passphrase_logs_in(key_format: str) -> None:
    phrase = "phrase-" + RUN
    storage = sftp_storage(new_dir(), private_key=locked_key(phrase, key_format),
                           passphrase=phrase)
    await storage.prepare()
    assert await storage.put("k/obj.bin", from_bytes(b"by a locked key")) == 15
    assert await collect(storage.get("k/obj.bin")) == b"by a locked key"
    await storage.close()
    target = StorageTargetSettings.model_validate(sftp_target(
        "far", sftp_private_key=locked_key(phrase, key_format),
        sftp_private_key_passphrase=phrase))
    configured = SftpStorage.from_target(target)
    assert await configured.stat("k/obj.bin") is None  # logged in (to a directory of its own)
    await configured.close()


@pytest.mark.parametrize("key_format", ["openssh", "pkcs8-pem"])
def test_a_locked_key_without_its_passphrase_is_named_not_shown(key_format: str) -> None:
    phrase = "phrase-" + RUN
    locked = locked_key(phrase, key_format)
    with pytest.raises(StorageError, match="sftp_private_key is encrypted: set "
                                           "sftp_private_key_passphrase") as missing:
        sftp_storage(new_dir(), private_key=locked)
    with pytest.raises(StorageError, match="sftp_private_key_passphrase does not open "
                                           "sftp_private_key") as wrong:
        sftp_storage(new_dir(), private_key=locked, passphrase="not-" + phrase)
    for caught in (missing, wrong):
        assert locked.split("\n")[1] not in str(caught.value)
        assert phrase not in str(caught.value)
    with pytest.raises(ValidationError, match="sftp_private_key_passphrase without"):
        StorageTargetSettings.model_validate(sftp_target(
            "far", sftp_password=password(), sftp_private_key_passphrase=phrase,
            sftp_private_key=None))


async def test_free_space_is_what_the_server_has() -> None:
    storage = sftp_storage(new_dir())
    await storage.prepare()
    free = await storage.free_space()
    await storage.close()
    here = shutil.disk_usage(SFTP_ROOT).free  # the server runs on this machine
    assert free is not None
    assert abs(free - here) < 0.05 * here, (free, here)


def test_unreadable_private_key_names_the_setting_only() -> None:
    garbage = ("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n"
               "-----END OPENSSH PRIVATE KEY-----")
    with pytest.raises(StorageError, match="sftp_private_key is not a readable") as caught:
        sftp_storage(new_dir(), private_key=garbage)
    assert "c2VjcmV0LWJ5dGVz" not in str(caught.value)


# ---- durability, partial files, the connection --------------------------------------

async def test_write_is_fsynced_then_renamed() -> None:
    directory = new_dir()
    storage = sftp_storage(directory)
    data = os.urandom(5 * 1024 * 1024 + 7)
    assert await storage.put("w/2026/obj.bin", from_bytes(data)) == len(data)
    assert storage.fsyncs == 1  # OpenSSH's fsync@openssh.com, before the rename
    folder = SFTP_ROOT / directory / "w/2026"
    assert [p.name for p in folder.iterdir()] == ["obj.bin"]
    assert (folder / "obj.bin").read_bytes() == data
    assert storage.describe("w/2026/obj.bin") == (
        f"sftp://backvault-sftp@{storage.host}:{storage.port}/~/{directory}/w/2026/obj.bin")
    await storage.close()


async def test_stale_partials_are_swept_by_age_only() -> None:
    directory = new_dir()
    storage = sftp_storage(directory)
    await storage.put("s/kept.bin", from_bytes(b"kept"))
    folder = SFTP_ROOT / directory / "s"
    old = folder / f"old.bin{PARTIAL}0123"
    fresh = folder / f"fresh.bin{PARTIAL}4567"
    for path in (old, fresh):  # as a killed writer leaves them
        path.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert await storage.pending_uploads() == ["s/fresh.bin", "s/old.bin"]
    assert [o.key async for o in storage.list_objects("s/")] == ["s/kept.bin"]
    assert await storage.discard_stale_partials(older_than_seconds=3600) == 1
    assert not old.exists()
    assert fresh.exists()
    assert await storage.discard_incomplete("s/fresh.bin") == 1
    assert await storage.pending_uploads() == []
    assert await collect(storage.get("s/kept.bin")) == b"kept"
    await storage.close()


async def test_one_connection_reused_and_rebuilt_after_a_cut() -> None:
    directory = new_dir()
    proxy = CuttingProxy(sftp_storage(directory).port)
    port = await proxy.start()
    storage = sftp_storage(directory, f"http://127.0.0.1:{port}")
    try:
        await storage.prepare()
        await storage.put("c/a", from_bytes(b"a"))
        assert await storage.stat("c/a") is not None
        assert [o.key async for o in storage.list_objects("c/")] == ["c/a"]
        assert storage.connects == 1
        proxy.block()
        await asyncio.sleep(0.2)  # the client sees its connection end
        with pytest.raises(StorageError) as caught:
            await storage.stat("c/a")
        assert caught.value.transient
        proxy.unblock()
        assert await collect(storage.get("c/a")) == b"a"
        assert storage.connects == 3  # the refused attempt, then the new connection
    finally:
        await storage.close()
        await proxy.close()


# ---- a backup and a restore through a real database ---------------------------------

async def test_backup_verify_restore_through_sftp(settings: Settings, admin: Account) -> None:
    directory = new_dir()
    ours = with_targets(settings, [sftp_target("box", directory=directory)], default="box")
    targets = StorageTargets.from_settings(ours)
    await targets.prepare()
    backup = await back_up(ours, targets, Progress(), DatabaseBackupCreate(source="pg"),
                           admin=admin.user.id)
    assert (backup.storage_target, backup.storage_backend) == ("box", "sftp")
    on_disk = SFTP_ROOT / directory / str(backup.storage_key)
    assert on_disk.stat().st_size == backup.stored_bytes
    assert (SFTP_ROOT / directory / str(backup.manifest_key)).exists()
    assert not [p for p in on_disk.parent.iterdir() if PARTIAL in p.name]
    result = await verify(ours, targets, backup.id, Progress())  # type: ignore[arg-type]
    assert result.state is VerificationState.passed, result.error
    database = f"bv_sftp_{RUN}"
    await restore(ours, targets, backup.id,  # type: ignore[arg-type]
                  RestoreRequest(target_database=database), Progress(), admin.user.id)
    assert await pg_snapshot(pg_uri(database)) == await pg_snapshot(pg_uri(PG_DB))
    assert isinstance(targets.default, StorageWrapper)
    store = targets.default.unwrapped()
    assert isinstance(store, SftpStorage)
    link = store.session._link
    assert link is not None
    assert link.conn is not None
    await targets.close()  # what the runtime does when it stops
    assert link.conn is None
