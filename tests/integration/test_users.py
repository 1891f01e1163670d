"""Finding 7: superadmins manage users (role, state, password, tokens, deletion) without
locking everyone out; the same through `backvault user ...`."""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId
from pydantic import SecretStr
from pymongo import MongoClient

from app.errors import ConflictError
from app.models.user import Role, User, UserCreate, UserUpdate
from app.services.access import auth as auth_service
from tests.support.accounts import TEST_PASSWORD, Account
from tests.support.errors import assert_error
from tests.support.settings import MONGO_URI

NEW_PASSWORD = "a-brand-new-long-password"


async def new_user(role: Role = Role.viewer) -> User:
    return await auth_service.create_user(UserCreate(
        username=f"managed-{uuid.uuid4().hex[:8]}", password=SecretStr(TEST_PASSWORD),
        role=role, email="before@example.com", name="Before"))


async def token_for(client: httpx.AsyncClient, username: str,
                    password: str = TEST_PASSWORD) -> dict[str, str]:
    answer = await client.post("/api/auth/token", json={"username": username,
                                                        "password": password})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def test_get_one_user(client: httpx.AsyncClient, superadmin: Account) -> None:
    user = await new_user()
    answer = await client.get(f"/api/auth/users/{user.id}", headers=superadmin.headers)
    assert answer.status_code == 200
    assert answer.json()["username"] == user.username
    assert "passwordHash" not in answer.text
    missing = await client.get(f"/api/auth/users/{PydanticObjectId()}",
                               headers=superadmin.headers)
    assert_error(missing, 404, "not_found")


async def test_patch_changes_role_email_and_name(client: httpx.AsyncClient,
                                                 superadmin: Account) -> None:
    user = await new_user()
    headers = await token_for(client, user.username)
    assert_error(await client.post("/api/backups/cleanup", headers=headers, json={}), 403,
                 "forbidden")
    answer = await client.patch(f"/api/auth/users/{user.id}", headers=superadmin.headers,
                                json={"role": "admin", "email": "after@example.com",
                                      "name": "After"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["role"], answer.json()["email"], answer.json()["name"]) == (
        "admin", "after@example.com", "After")
    # The same token now has the new role: roles come from the catalog.
    cleanup = await client.post("/api/backups/cleanup", headers=headers,
                                json={"dryRun": True})
    assert cleanup.status_code not in (401, 403), cleanup.text
    cleared = await client.patch(f"/api/auth/users/{user.id}", headers=superadmin.headers,
                                 json={"email": None})
    assert cleared.json()["email"] is None
    assert cleared.json()["name"] == "After"
    for bad in ({"role": None}, {"active": None}, {"role": "emperor"}, {"password": "x"}):
        assert_error(await client.patch(f"/api/auth/users/{user.id}",
                                        headers=superadmin.headers, json=bad),
                     422, "validation_error")


async def test_disable_revokes_tokens_and_enable_lets_the_user_back(
        client: httpx.AsyncClient, superadmin: Account) -> None:
    user = await new_user()
    headers = await token_for(client, user.username)
    disabled = await client.patch(f"/api/auth/users/{user.id}", headers=superadmin.headers,
                                  json={"active": False})
    assert disabled.json()["active"] is False
    assert_error(await client.get("/api/auth/me", headers=headers), 401, "unauthorized")
    assert_error(await client.post("/api/auth/token", json={
        "username": user.username, "password": TEST_PASSWORD}), 401, "unauthorized")
    await client.patch(f"/api/auth/users/{user.id}", headers=superadmin.headers,
                       json={"active": True})
    # The token from before stays revoked; a new login works.
    assert_error(await client.get("/api/auth/me", headers=headers), 401, "unauthorized")
    fresh = await token_for(client, user.username)
    assert (await client.get("/api/auth/me", headers=fresh)).status_code == 200


async def test_password_reset_revokes_tokens(client: httpx.AsyncClient,
                                             superadmin: Account) -> None:
    user = await new_user()
    headers = await token_for(client, user.username)
    short = await client.post(f"/api/auth/users/{user.id}/password",
                              headers=superadmin.headers, json={"password": "short"})
    assert_error(short, 422, "validation_error")
    reset = await client.post(f"/api/auth/users/{user.id}/password",
                              headers=superadmin.headers, json={"password": NEW_PASSWORD})
    assert reset.status_code == 200, reset.text
    assert NEW_PASSWORD not in reset.text
    error = assert_error(await client.get("/api/auth/me", headers=headers), 401,
                         "unauthorized")
    assert "revoked" in error["message"]
    assert_error(await client.post("/api/auth/token", json={
        "username": user.username, "password": TEST_PASSWORD}), 401, "unauthorized")
    fresh = await token_for(client, user.username, NEW_PASSWORD)
    assert (await client.get("/api/auth/me", headers=fresh)).status_code == 200


async def test_revoke_ends_every_token_issued_so_far(client: httpx.AsyncClient,
                                                     superadmin: Account) -> None:
    user = await new_user()
    tokens = [await token_for(client, user.username) for _ in range(2)]
    revoked = await client.post(f"/api/auth/users/{user.id}/revoke", headers=superadmin.headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["tokensValidAfter"] is not None
    for headers in tokens:
        assert_error(await client.get("/api/auth/me", headers=headers), 401, "unauthorized")
    # A login right after the revocation (same second) is valid.
    fresh = await token_for(client, user.username)
    assert (await client.get("/api/auth/me", headers=fresh)).status_code == 200


async def test_delete_user(client: httpx.AsyncClient, superadmin: Account) -> None:
    user = await new_user()
    headers = await token_for(client, user.username)
    deleted = await client.delete(f"/api/auth/users/{user.id}", headers=superadmin.headers)
    assert deleted.status_code == 204
    assert_error(await client.get(f"/api/auth/users/{user.id}", headers=superadmin.headers),
                 404, "not_found")
    assert_error(await client.get("/api/auth/me", headers=headers), 401, "unauthorized")
    assert_error(await client.delete(f"/api/auth/users/{user.id}", headers=superadmin.headers),
                 404, "not_found")


async def test_superadmin_cannot_lock_themselves_out(client: httpx.AsyncClient,
                                                     superadmin: Account) -> None:
    me = await new_user(Role.superadmin)
    headers = await token_for(client, me.username)
    url = f"/api/auth/users/{me.id}"
    for change in ({"role": "admin"}, {"active": False}):
        error = assert_error(await client.patch(url, headers=headers, json=change), 409,
                             "conflict")
        assert "yourself" in error["message"]
    assert_error(await client.delete(url, headers=headers), 409, "conflict")
    stored = await User.get(me.id)
    assert stored is not None
    assert (stored.role, stored.active) == (Role.superadmin, True)
    # Editing your own name is fine; another superadmin may demote you.
    assert (await client.patch(url, headers=headers, json={"name": "Me"})).status_code == 200
    demoted = await client.patch(url, headers=superadmin.headers, json={"role": "admin"})
    assert demoted.json()["role"] == "admin"


async def test_system_account_cannot_be_changed(client: httpx.AsyncClient,
                                                superadmin: Account) -> None:
    system_id = await auth_service.system_user_id()
    url = f"/api/auth/users/{system_id}"
    assert (await client.get(url, headers=superadmin.headers)).status_code == 200
    attempts = [client.patch(url, headers=superadmin.headers, json={"active": True}),
                client.post(f"{url}/password", headers=superadmin.headers,
                            json={"password": NEW_PASSWORD}),
                client.post(f"{url}/revoke", headers=superadmin.headers),
                client.delete(url, headers=superadmin.headers)]
    for attempt in attempts:
        assert_error(await attempt, 403, "forbidden")
    stored = await User.get(system_id)
    assert stored is not None
    assert stored.active is False


# The command line, against a catalog of its own where one superadmin can be the last.

@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("cli-users")
    database = f"backvault_cli_users_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({"BACKUP_SYSTEM__ENVIRONMENT": "test", "BACKUP_SYSTEM__LOG_LEVEL": "warning",
                "BACKUP_CATALOG__MONGO_URI": MONGO_URI, "BACKUP_CATALOG__DATABASE": database,
                "BACKUP_STORAGE__LOCAL_DIR": str(work / "store"),
                "BACKUP_STORAGE__SPOOL_DIR": str(work / "spool"), "PWD": str(work),
                "BACKUP_AUTH__JWT_SECRET": "cli-users-jwt-" + uuid.uuid4().hex,
                "BACKUP_AUTH__BOOTSTRAP_PASSWORD": "cli-users-" + uuid.uuid4().hex})
    yield env
    MongoClient(MONGO_URI).drop_database(database)


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "backvault"), "user", *args]
    # No controlling terminal: getpass reads the password from standard input.
    return subprocess.run(command, env=env, input=stdin, capture_output=True, text=True,
                          timeout=120, start_new_session=True, cwd=env["PWD"])


def stored_user(env: dict[str, str], username: str) -> dict[str, Any] | None:
    client: MongoClient[dict[str, Any]] = MongoClient(MONGO_URI)
    try:
        return client[env["BACKUP_CATALOG__DATABASE"]]["users"].find_one({"username": username})
    finally:
        client.close()


def test_cli_user_commands_keep_the_last_superadmin(cli_env: dict[str, str]) -> None:
    created = cli(cli_env, "create", "owner", "--role", "superadmin", stdin=TEST_PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    for args in (["set-role", "owner", "admin"], ["disable", "OWNER"],
                 ["delete", "owner", "--yes"]):
        refused = cli(cli_env, *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert "last active superadmin" in refused.stderr
    assert stored_user(cli_env, "owner")["role"] == "superadmin"  # type: ignore[index]

    assert cli(cli_env, "create", "helper", stdin=TEST_PASSWORD + "\n").returncode == 0
    assert cli(cli_env, "set-role", "Helper", "superadmin").returncode == 0
    assert cli(cli_env, "set-role", "owner", "admin").returncode == 0
    assert cli(cli_env, "disable", "helper").returncode == 2  # now the last one

    before = stored_user(cli_env, "helper")
    assert before is not None
    reset = cli(cli_env, "reset-password", "helper", stdin=NEW_PASSWORD + "\n")
    assert reset.returncode == 0, reset.stderr
    after = stored_user(cli_env, "helper")
    assert after is not None
    assert after["passwordHash"] != before["passwordHash"]
    assert after["tokensValidAfter"] is not None
    assert cli(cli_env, "revoke", "helper").returncode == 0

    assert cli(cli_env, "disable", "owner").returncode == 0
    assert stored_user(cli_env, "owner")["active"] is False  # type: ignore[index]
    assert cli(cli_env, "enable", "owner").returncode == 0
    assert stored_user(cli_env, "owner")["active"] is True  # type: ignore[index]
    assert cli(cli_env, "delete", "owner", "--yes").returncode == 0
    assert stored_user(cli_env, "owner") is None
    missing = cli(cli_env, "revoke", "nobody")
    assert missing.returncode == 2
    assert "not found" in missing.stderr


async def test_two_superadmins_cannot_demote_each_other_at_once(app: Any) -> None:
    # Found by probing: with exactly two superadmins, each demoting (or deleting) the other
    # at the same moment left none. Other superadmins of the session are set aside.
    from app.services.access import users as user_service

    others = [u.id async for u in User.find({"role": "superadmin", "active": True})]
    users = User.get_pymongo_collection()
    await users.update_many({"_id": {"$in": others}}, {"$set": {"active": False}})
    try:
        for change in ({"role": Role.viewer}, {"active": False}):
            one, two = await new_user(Role.superadmin), await new_user(Role.superadmin)
            results = await asyncio.gather(
                user_service.update_user(two, UserUpdate(**change), actor=one),
                user_service.update_user(one, UserUpdate(**change), actor=two),
                return_exceptions=True)
            refused = [r for r in results if isinstance(r, ConflictError)]
            assert len(refused) == 1, results
            left = await User.find({"role": "superadmin", "active": True}).count()
            assert left == 1
            await users.update_many({"_id": {"$in": [one.id, two.id]}},
                                    {"$set": {"active": False}})
        one, two = await new_user(Role.superadmin), await new_user(Role.superadmin)
        deletions = await asyncio.gather(user_service.delete_user(two, actor=one),
                                         user_service.delete_user(one, actor=two),
                                         return_exceptions=True)
        assert sum(isinstance(r, ConflictError) for r in deletions) == 1, deletions
        assert await User.find({"role": "superadmin", "active": True}).count() == 1
        await users.update_many({"_id": {"$in": [one.id, two.id]}}, {"$set": {"active": False}})
    finally:
        await users.update_many({"_id": {"$in": others}}, {"$set": {"active": True}})
