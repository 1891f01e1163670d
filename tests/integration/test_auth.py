"""Tokens and roles: every /api route rejects bad tokens and roles that are too low."""

import base64
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI
from pydantic import SecretStr
from pymongo.errors import DuplicateKeyError

from app.config import Settings
from app.models.common import utcnow
from app.models.user import Role, User, UserCreate
from app.services.access import auth as auth_service
from tests.support.accounts import TEST_PASSWORD, Account
from tests.support.errors import assert_error
from tests.support.requests_login import address, client_from, login

# Each /api route and the least role it needs; a new route must be added here.
ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("POST", "/api/auth/token"): None,
    ("GET", "/api/auth/me"): Role.viewer,
    ("GET", "/api/auth/users"): Role.superadmin,
    ("POST", "/api/auth/users"): Role.superadmin,
    ("GET", "/api/auth/users/{user_id}"): Role.superadmin,
    ("PATCH", "/api/auth/users/{user_id}"): Role.superadmin,
    ("DELETE", "/api/auth/users/{user_id}"): Role.superadmin,
    ("POST", "/api/auth/users/{user_id}/password"): Role.superadmin,
    ("POST", "/api/auth/users/{user_id}/revoke"): Role.superadmin,
    ("GET", "/api/backups"): Role.viewer,
    ("GET", "/api/backups/stats"): Role.viewer,
    ("GET", "/api/backups/health"): Role.viewer,
    ("GET", "/api/backups/config"): Role.viewer,
    ("GET", "/api/backups/{backup_id}"): Role.viewer,
    ("POST", "/api/backups/export"): Role.admin,
    ("POST", "/api/backups/database"): Role.admin,
    ("GET", "/api/backups/files"): Role.viewer,
    ("POST", "/api/backups/{backup_id}/verify"): Role.admin,
    ("POST", "/api/backups/{backup_id}/restore"): Role.superadmin,
    ("DELETE", "/api/backups/{backup_id}"): Role.superadmin,
    ("GET", "/api/backups/jobs"): Role.viewer,
    ("GET", "/api/backups/jobs/{job_id}"): Role.viewer,
    ("GET", "/api/backups/jobs/active"): Role.viewer,
    ("GET", "/api/backups/schedule/status"): Role.viewer,
    ("POST", "/api/backups/cleanup"): Role.admin,
    ("GET", "/api/schedules"): Role.viewer,
    ("POST", "/api/schedules"): Role.admin,
    ("GET", "/api/schedules/{schedule_id}"): Role.viewer,
    ("PATCH", "/api/schedules/{schedule_id}"): Role.admin,
    ("DELETE", "/api/schedules/{schedule_id}"): Role.admin,
    ("POST", "/api/backups/content"): Role.admin,
    ("POST", "/api/backups/full"): Role.admin,
    ("GET", "/api/backups/{backup_id}/items"): Role.viewer,
    ("GET", "/api/backups/{backup_id}/export.car"): Role.superadmin,
    ("GET", "/api/backups/{backup_id}/export.tar"): Role.superadmin,
    ("POST", "/api/backups/{backup_id}/import"): Role.superadmin,
    ("POST", "/api/backups/{backup_id}/undelete"): Role.superadmin,
    ("POST", "/api/backups/jobs/{job_id}/cancel"): Role.admin,
    ("GET", "/api/audit"): Role.superadmin,
    ("GET", "/api/audit/export"): Role.superadmin,
    ("GET", "/api/audit/verify"): Role.superadmin,
    ("GET", "/api/backups/status"): Role.viewer,
    ("GET", "/api/backups/dashboard"): Role.viewer,
    ("GET", "/api/backups/{backup_id}/manifest"): Role.viewer,
    ("GET", "/api/backups/{backup_id}/artifact"): Role.admin,
    ("GET", "/api/backups/{backup_id}/verifications"): Role.viewer,
    ("GET", "/api/schedules/preview"): Role.viewer,
    ("POST", "/api/catalog/rebuild"): Role.superadmin,
    ("GET", "/api/drills"): Role.viewer,
    ("POST", "/api/drills"): Role.admin,
    ("GET", "/api/sources"): Role.viewer,
    ("GET", "/api/sources/managed"): Role.viewer,
    ("POST", "/api/sources"): Role.admin,
    ("PATCH", "/api/sources/{name}"): Role.admin,
    ("DELETE", "/api/sources/{name}"): Role.admin,
    ("POST", "/api/sources/{name}/test"): Role.admin,
    ("GET", "/api/pitr"): Role.viewer,
    ("GET", "/api/pitr/{source}"): Role.viewer,
    ("GET", "/api/pitr/{source}/window"): Role.viewer,
    ("POST", "/api/pitr/{source}/verify"): Role.admin,
    ("POST", "/api/pitr/{source}/basebackup"): Role.admin,
    ("POST", "/api/pitr/{source}/restore"): Role.superadmin,
}


def api_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every /api operation the app publishes (nothing under /api is hidden from the docs)."""
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return {(method.upper(), path) for path, operations in paths.items()
            if path.startswith("/api") for method in operations}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(PydanticObjectId()), path)


def test_route_table_is_complete(app: FastAPI) -> None:
    assert api_routes(app) == set(ROUTE_ROLES)


PROTECTED = sorted(k for k, v in ROUTE_ROLES.items() if v is not None)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_for(user: User, settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = utcnow()
    claims: dict[str, Any] = {"sub": str(user.id), "role": user.role.value,
                              "iss": settings.auth.jwt_issuer, "aud": settings.auth.jwt_audience,
                              "iat": now, "exp": now + timedelta(minutes=5)}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def bad_tokens(user: User, settings: Settings) -> dict[str, str]:
    secret = settings.auth.jwt_secret.get_secret_value()
    past = utcnow() - timedelta(hours=2)
    good = claims_for(user, settings)
    return {
        "expired": jwt.encode(claims_for(user, settings, iat=past, exp=past + timedelta(hours=1)),
                              secret, algorithm="HS256"),
        "forged": jwt.encode(good, "some-other-secret-that-is-long-enough!", algorithm="HS256"),
        "alg-none": b64({"alg": "none", "typ": "JWT"}) + "."
        + b64({k: (int(v.timestamp()) if hasattr(v, "timestamp") else v)
               for k, v in good.items()}) + ".",
        "wrong-audience": jwt.encode(claims_for(user, settings, aud="someone-else"), secret,
                                     algorithm="HS256"),
        "wrong-issuer": jwt.encode(claims_for(user, settings, iss="evil"), secret,
                                   algorithm="HS256"),
        "no-exp": jwt.encode(claims_for(user, settings, exp=None), secret, algorithm="HS256"),
        "garbage": "not.a.jwt",
        "unknown-user": jwt.encode(claims_for(user, settings, sub=str(PydanticObjectId())),
                                   secret, algorithm="HS256"),
        "sub-not-an-id": jwt.encode(claims_for(user, settings, sub="abc"), secret,
                                    algorithm="HS256"),
    }


async def call(client: httpx.AsyncClient, method: str, path: str,
               headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"username": "someone", "password": "a-long-enough-password"} \
        if path == "/api/auth/users" else {}
    return await client.request(method, concrete(path), headers=headers or {},
                                json=body if method == "POST" else None)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_missing_token_is_401(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await call(client, method, path)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_bad_tokens_are_401(client: httpx.AsyncClient, settings: Settings,
                                  superadmin: Account, method: str, path: str) -> None:
    for name, token in bad_tokens(superadmin.user, settings).items():
        response = await call(client, method, path, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_role_matrix(client: httpx.AsyncClient, accounts: dict[Role, Account],
                           method: str, path: str) -> None:
    needed = ROUTE_ROLES[(method, path)]
    assert needed is not None
    for role, account in accounts.items():
        response = await call(client, method, path, account.headers)
        if role.allows(needed):
            assert response.status_code not in (401, 403), (role, response.text)
        else:
            assert_error(response, 403, "forbidden")
            assert response.json()["error"]["details"]["required"] == needed.value


async def test_token_with_form_and_json(client: httpx.AsyncClient, admin: Account,
                                        settings: Settings) -> None:
    form = await client.post("/api/auth/token", data={
        "username": admin.user.username, "password": TEST_PASSWORD, "grant_type": "password"})
    assert form.status_code == 200, form.text
    body = form.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.auth.token_minutes * 60
    assert body["role"] == "admin"
    claims = jwt.decode(body["access_token"], settings.auth.jwt_secret.get_secret_value(),
                        algorithms=["HS256"], audience=settings.auth.jwt_audience,
                        issuer=settings.auth.jwt_issuer)
    assert claims["sub"] == str(admin.user.id)
    assert claims["role"] == "admin"
    assert {"exp", "iat", "iss", "aud", "sub", "role"} <= set(claims)
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"

    as_json = await client.post("/api/auth/token", json={
        "username": admin.user.username, "password": TEST_PASSWORD})
    assert as_json.status_code == 200
    me = await client.get("/api/auth/me",
                          headers={"Authorization": f"Bearer {as_json.json()['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == admin.user.username
    assert "passwordHash" not in me.text


@pytest.mark.parametrize("credentials", [
    {"username": "nobody-here", "password": "whatever-password"},
    {"username": "WRONG", "password": TEST_PASSWORD},
])
async def test_bad_credentials_are_401(app: FastAPI, credentials: dict[str, str]) -> None:
    # Failed logins each from an address of their own, so that no address gets blocked.
    async with client_from(app, address()) as client:
        response = await client.post("/api/auth/token", json=credentials)
    assert_error(response, 401, "unauthorized")
    assert response.json()["error"]["message"] == "Incorrect username or password"


async def test_wrong_password_is_401(app: FastAPI, viewer: Account) -> None:
    async with client_from(app, address()) as client:
        response = await client.post("/api/auth/token", json={
            "username": viewer.user.username, "password": "not-the-password"})
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("body", [{}, {"username": "x"}, {"password": "y"}, [1, 2]])
async def test_token_request_without_fields_is_422(client: httpx.AsyncClient,
                                                   body: Any) -> None:
    response = await client.post("/api/auth/token", json=body)
    assert_error(response, 422, "validation_error")


async def test_token_request_with_broken_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/token", content=b"{nope",
                                 headers={"content-type": "application/json"})
    assert_error(response, 422, "validation_error")


async def test_disabled_user_loses_access(app: FastAPI, client: httpx.AsyncClient,
                                          settings: Settings) -> None:
    user = await auth_service.create_user(UserCreate(
        username="soon-disabled", password=SecretStr(TEST_PASSWORD), role=Role.admin))
    token, _ = auth_service.issue_token(user, settings)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/backups", headers=headers)).status_code == 200
    await User.find_one({"_id": user.id}).update({"$set": {"active": False}})
    assert_error(await client.get("/api/backups", headers=headers), 401, "unauthorized")
    async with client_from(app, address()) as elsewhere:
        login = await elsewhere.post("/api/auth/token", json={"username": "soon-disabled",
                                                               "password": TEST_PASSWORD})
    assert_error(login, 401, "unauthorized")


async def test_role_comes_from_the_catalog_not_the_token(client: httpx.AsyncClient,
                                                         settings: Settings) -> None:
    user = await auth_service.create_user(UserCreate(
        username="demoted", password=SecretStr(TEST_PASSWORD), role=Role.superadmin))
    token, _ = auth_service.issue_token(user, settings)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/auth/users", headers=headers)).status_code == 200
    await User.find_one({"_id": user.id}).update({"$set": {"role": "viewer"}})
    assert_error(await client.get("/api/auth/users", headers=headers), 403, "forbidden")


async def test_superadmin_creates_users(client: httpx.AsyncClient, superadmin: Account) -> None:
    created = await client.post("/api/auth/users", headers=superadmin.headers, json={
        "username": "ops-admin", "password": "a-good-long-password", "role": "admin",
        "email": "ops@example.com"})
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "admin"
    assert "password" not in created.text.lower()
    login = await client.post("/api/auth/token", json={
        "username": "ops-admin", "password": "a-good-long-password"})
    assert login.json()["role"] == "admin"
    stored = await User.find_one({"username": "ops-admin"})
    assert stored is not None
    assert stored.password_hash.startswith("$argon2")

    again = await client.post("/api/auth/users", headers=superadmin.headers, json={
        "username": "ops-admin", "password": "another-long-password"})
    assert_error(again, 409, "conflict")

    short = await client.post("/api/auth/users", headers=superadmin.headers, json={
        "username": "x1", "password": "short", "role": "emperor"})
    assert_error(short, 422, "validation_error")
    fields = {d["field"] for d in short.json()["error"]["details"]}
    assert fields == {"username", "password", "role"}

    listing = await client.get("/api/auth/users", headers=superadmin.headers)
    assert "ops-admin" in [u["username"] for u in listing.json()]
    assert "passwordHash" not in listing.text


async def test_bootstrap_superadmin_exists_and_is_not_recreated(
        client: httpx.AsyncClient, settings: Settings) -> None:
    login = await client.post("/api/auth/token", json={
        "username": "root", "password": "root-password-for-tests"})
    assert login.status_code == 200
    assert login.json()["role"] == "superadmin"
    assert await auth_service.bootstrap_superadmin(settings) is None
    assert await User.find({"username": "root"}).count() == 1


# Usernames are unique without regard to case, and login ignores case.

async def test_usernames_are_unique_without_regard_to_case(client: httpx.AsyncClient,
                                                           superadmin: Account) -> None:
    name = f"Case-{uuid.uuid4().hex[:6]}"
    created = await client.post("/api/auth/users", headers=superadmin.headers, json={
        "username": name, "password": TEST_PASSWORD})
    assert created.status_code == 201, created.text
    for clash in (name.lower(), name.upper()):
        again = await client.post("/api/auth/users", headers=superadmin.headers, json={
            "username": clash, "password": TEST_PASSWORD})
        assert_error(again, 409, "conflict")
    # The unique index holds even when the check before the insert is skipped.
    with pytest.raises(DuplicateKeyError):
        await User(username=name.swapcase(), username_lower=name.lower(),
                   password_hash="x").insert()
    answer = await client.post("/api/auth/token", json={"username": name.lower(),
                                                         "password": TEST_PASSWORD})
    assert answer.status_code == 200, answer.text


async def test_users_of_older_versions_still_log_in(client: httpx.AsyncClient) -> None:
    name = f"Old-{uuid.uuid4().hex[:6]}"
    # As an older version stored it: no usernameLower.
    await User.get_pymongo_collection().insert_one({
        "username": name, "role": "viewer", "active": True, "createdAt": utcnow(),
        "passwordHash": auth_service.hash_password(TEST_PASSWORD)})
    assert (await login(client, name, TEST_PASSWORD)).status_code == 200
    await auth_service.ensure_username_index()
    stored = await User.get_pymongo_collection().find_one({"username": name})
    assert stored is not None
    assert stored["usernameLower"] == name.lower()
    assert (await login(client, name.upper(), TEST_PASSWORD)).status_code == 200


async def test_system_account_cannot_log_in(app: FastAPI) -> None:
    await auth_service.system_user_id()
    for name in ("system", "SYSTEM"):
        async with client_from(app, address()) as client:
            assert_error(await login(client, name, "anything-at-all"), 401, "unauthorized")
