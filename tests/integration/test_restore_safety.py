"""Issue 10, findings 2, 3 and 11: restore targets, confirmation, safety backups, the
manifest's stock-tool commands. Real backups on the real PostgreSQL and FerretDB."""

import json
from typing import Any

import asyncpg
import httpx
import pytest
from beanie import PydanticObjectId

from app.config import Settings, SourceKind
from app.models.requests import RestoreRequest
from app.models.user import User
from app.services.databases.restore import ProtectedDatabaseError, plan_restore, restore
from app.services.jobs.runner import Progress
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.data import pg_snapshot
from tests.support.restore_safety import (
    backup_count,
    backup_document,
    backup_of,
    get_backup,
    restore_call,
    with_source,
)
from tests.support.settings import MONGO_DB, MONGO_URI, PG_DB, RUN, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases")


async def _usernames() -> list[tuple[str, str]]:
    return sorted((u.username, u.role.value) for u in await User.find_all().to_list())


async def test_restore_into_the_catalog_is_refused(client: httpx.AsyncClient, admin: Account,
                                                   superadmin: Account,
                                                   settings: Settings) -> None:
    users = await _usernames()
    backup = await backup_of(client, admin, "mongo")
    catalog = settings.catalog.database
    for body in ({"targetDatabase": catalog, "dropExisting": True, "confirm": catalog},
                 {"targetDatabase": catalog, "dryRun": True},
                 {"targetDatabase": catalog.upper(), "dryRun": True}):
        response = await restore_call(client, superadmin, backup["id"], body)
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "protected_database"
        assert "catalog database" in error["message"]
    # The CLI plans and restores with the same service code.
    storage = LocalStorage(settings.storage.local_dir)
    request = RestoreRequest(target_database=catalog, drop_existing=True, confirm=catalog)
    with pytest.raises(ProtectedDatabaseError, match="catalog database"):
        await plan_restore(settings, storage, await backup_document(backup["id"]), request)
    with pytest.raises(ProtectedDatabaseError, match="catalog database"):
        await restore(settings, storage, PydanticObjectId(backup["id"]), request, Progress(),
                      superadmin.user.id)
    # A backup of the catalog itself does not go back over the live catalog by default.
    own = await backup_of(client, admin, "catalog")
    response = await restore_call(client, superadmin, own["id"], {"dryRun": True})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "protected_database"
    assert await _usernames() == users
    me = await client.get("/api/auth/me", headers=superadmin.headers)
    assert me.status_code == 200
    assert me.json()["role"] == "superadmin"


@pytest.mark.parametrize(("source", "target", "reason"), [
    ("pg", "postgres", "postgres system database"),
    ("pg", "template1", "postgres system database"),
    ("pg", "template0", "postgres system database"),
    ("mongo", "admin", "mongodb system database"),
    ("mongo", "local", "mongodb system database"),
    ("mongo", "config", "mongodb system database"),
])
async def test_system_databases_are_refused_even_in_a_dry_run(
        client: httpx.AsyncClient, admin: Account, superadmin: Account, source: str,
        target: str, reason: str) -> None:
    backup = await backup_of(client, admin, source)
    for body in ({"targetDatabase": target, "dryRun": True},
                 {"targetDatabase": target, "dropExisting": True, "confirm": target}):
        response = await restore_call(client, superadmin, backup["id"], body)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "protected_database"
        assert reason in response.json()["error"]["message"]


@pytest.mark.parametrize(("source", "kind", "other_uri", "other_db"), [
    ("pg", SourceKind("postgres"), pg_uri(f"bv_shop2_{RUN}"), f"bv_shop2_{RUN}"),
    ("mongo", SourceKind("mongodb"), f"{MONGO_URI}bv_shop3_{RUN}", f"bv_shop3_{RUN}"),
])
async def test_another_sources_database_is_refused(
        client: httpx.AsyncClient, admin: Account, settings: Settings, source: str,
        kind: SourceKind, other_uri: str, other_db: str) -> None:
    backup = await backup_document((await backup_of(client, admin, source))["id"])
    configured = with_source(settings, "shop2", kind, other_uri)
    storage = LocalStorage(settings.storage.local_dir)
    for request in (RestoreRequest(target_database=other_db, dry_run=True),
                    RestoreRequest(target_database=other_db, drop_existing=True,
                                   confirm=other_db)):
        with pytest.raises(ProtectedDatabaseError, match="database of source 'shop2'"):
            await plan_restore(configured, storage, backup, request)
    # Without that source configured, the same name is an ordinary new database.
    plan = await plan_restore(settings, storage, backup,
                              RestoreRequest(target_database=other_db, dry_run=True))
    assert plan.target_exists is False


async def test_restore_over_data_needs_confirmation_naming_the_target(
        client: httpx.AsyncClient, admin: Account, superadmin: Account) -> None:
    backup = await backup_of(client, admin, "pg")
    target = f"bv_confirm_{RUN}"
    first = await restore_call(client, superadmin, backup["id"], {"targetDatabase": target})
    assert first.json()["status"] == "completed", first.json()  # new database: no question
    conn = await asyncpg.connect(pg_uri(target))
    await conn.execute("INSERT INTO authors (name) VALUES ('only in the target')")
    await conn.close()
    changed = await pg_snapshot(pg_uri(target))

    plan = await restore_call(client, superadmin, backup["id"],
                              {"targetDatabase": target, "dropExisting": True, "dryRun": True})
    assert plan.status_code == 200, plan.text
    assert plan.json()["confirmationRequired"] is True
    for confirm in (None, "wrong", target.upper(), PG_DB):
        body: dict[str, Any] = {"targetDatabase": target, "dropExisting": True}
        if confirm is not None:
            body["confirm"] = confirm
        refused = await restore_call(client, superadmin, backup["id"], body)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "confirmation_required"
        assert f'send "confirm": "{target}"' in error["message"]
        assert error["details"] == {"field": "confirm", "expected": target}
    assert await pg_snapshot(pg_uri(target)) == changed  # nothing was touched

    done = await restore_call(client, superadmin, backup["id"],
                              {"targetDatabase": target, "dropExisting": True,
                               "confirm": target})
    assert done.json()["status"] == "completed", done.json()
    assert await pg_snapshot(pg_uri(target)) == await pg_snapshot(pg_uri(PG_DB))


@pytest.mark.parametrize("name", ["a.b", "a\u0000b", "x" * 64, "a/b", "a b", "a$b", "-a"])
@pytest.mark.parametrize("source", ["pg", "mongo"])
async def test_invalid_database_names_are_422(client: httpx.AsyncClient, admin: Account,
                                              superadmin: Account, source: str,
                                              name: str) -> None:
    backup = (await client.get("/api/backups", params={"source": source, "status": "completed"},
                               headers=admin.headers)).json()["items"]
    backup_id = backup[0]["id"] if backup else (await backup_of(client, admin, source))["id"]
    for dry_run in (True, False):
        response = await restore_call(client, superadmin, backup_id,
                                      {"targetDatabase": name, "dryRun": dry_run,
                                       "dropExisting": True, "confirm": name}, wait=False)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert [d["field"] for d in error["details"]] == ["targetDatabase"]


async def test_safety_backup_holds_the_target_and_restores_there_by_default(
        client: httpx.AsyncClient, admin: Account, superadmin: Account,
        settings: Settings) -> None:
    source_before = await pg_snapshot(pg_uri(PG_DB))
    backup = await backup_of(client, admin, "pg")
    assert backup["database"] == PG_DB
    assert backup["safetyFor"] is None
    copy = f"bv_shop_copy_{RUN}"
    first = await restore_call(client, superadmin, backup["id"], {"targetDatabase": copy})
    assert first.json()["status"] == "completed", first.json()
    conn = await asyncpg.connect(pg_uri(copy))
    await conn.execute("INSERT INTO authors (name) VALUES ('copy only')")
    await conn.close()
    copy_content = await pg_snapshot(pg_uri(copy))

    replaced = await restore_call(client, superadmin, backup["id"],
                                  {"targetDatabase": copy, "dropExisting": True,
                                   "confirm": copy})
    assert replaced.json()["status"] == "completed", replaced.json()
    safety_id = replaced.json()["result"]["safetyBackupId"]
    safety = await get_backup(client, admin, safety_id)
    assert safety["source"] == "pg"
    assert safety["database"] == copy
    assert safety["safetyFor"] == backup["id"]
    manifest = json.loads((LocalStorage(settings.storage.local_dir).root
                           / safety["manifestKey"]).read_text())
    assert manifest["database"] == copy
    assert manifest["safetyFor"] == backup["id"]

    # Restoring the safety backup with no target returns shop_copy's content to shop_copy.
    plan = await restore_call(client, superadmin, safety_id, {"dryRun": True})
    assert plan.json()["targetDatabase"] == copy
    assert plan.json()["database"] == copy
    count = await backup_count()
    back = await restore_call(client, superadmin, safety_id,
                              {"dropExisting": True, "confirm": copy, "safetyBackup": False})
    assert back.json()["status"] == "completed", back.json()
    assert back.json()["result"]["targetDatabase"] == copy
    assert await pg_snapshot(pg_uri(copy)) == copy_content
    assert await pg_snapshot(pg_uri(PG_DB)) == source_before  # shop itself untouched
    assert await backup_count() == count


async def test_manifest_commands_restore_into_a_new_database(
        client: httpx.AsyncClient, admin: Account, settings: Settings) -> None:
    root = LocalStorage(settings.storage.local_dir).root
    for source, database in (("pg", PG_DB), ("mongo", MONGO_DB)):
        backup = await backup_of(client, admin, source)
        manifest = json.loads((root / backup["manifestKey"]).read_text())
        command = manifest["restoreCommand"]
        assert manifest["database"] == database
        assert "NEW_DB" in command
        assert "HOST" in command
        assert f"-d {database}" not in command
        assert f"nsInclude='{database}" not in command
        if source == "pg":
            assert command.startswith("createdb -h HOST -p PORT -U USER -T template0 NEW_DB && ")
            assert command.endswith("pg_restore --no-owner -h HOST -p PORT -U USER -d NEW_DB")
        else:
            assert command.endswith(f"--archive --nsFrom='{database}.*' --nsTo='NEW_DB.*'")
        assert "NEW_DB" in manifest["restoreNote"]
