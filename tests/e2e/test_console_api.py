"""The console's session, CSRF and cron preview over HTTP (in process, real catalog)."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import LoginSettings, Settings
from app.models.user import Role, UserCreate
from app.models.wal import WalSegment
from app.services.access import auth as auth_service
from app.services.access.session import SESSION_COOKIE, csrf_token
from tests.support.accounts import TEST_PASSWORD, Account
from tests.support.requests_login import address, client_from, throttled_logins


def _client(app: FastAPI, base: str = "http://backvault.test") -> httpx.AsyncClient:
    return client_from(app, address(), base)


async def _user(role: Role) -> str:
    user = await auth_service.create_user(UserCreate(
        username=f"console-{uuid.uuid4().hex[:8]}", password=SecretStr(TEST_PASSWORD),
        role=role))
    return user.username


async def _signed_in(client: httpx.AsyncClient, role: Role = Role.admin) -> str:
    """Signs in through the form; the session token."""
    answer = await client.post("/login", data={"username": await _user(role),
                                               "password": TEST_PASSWORD, "next": "/jobs"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/jobs"
    token = client.cookies.get(SESSION_COOKIE)
    assert token
    return token


async def test_sign_in_sets_a_strict_httponly_cookie_that_lives_as_the_token(
        app: FastAPI, settings: Settings) -> None:
    async with _client(app) as client:
        answer = await client.post("/login", data={"username": await _user(Role.viewer),
                                                   "password": TEST_PASSWORD})
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert f"max-age={settings.auth.token_minutes * 60}" in cookie
        assert "secure" not in cookie
        # The API takes the cookie as it takes a bearer token.
        me = await client.get("/api/auth/me")
        assert me.status_code == 200
        assert me.json()["role"] == "viewer"
    async with _client(app, "https://backvault.test") as client:
        answer = await client.post("/login", data={"username": await _user(Role.viewer),
                                                   "password": TEST_PASSWORD})
        assert "secure" in answer.headers["set-cookie"].lower()


async def test_a_next_address_off_the_site_is_ignored(app: FastAPI) -> None:
    async with _client(app) as client:
        answer = await client.post("/login", data={
            "username": await _user(Role.viewer), "password": TEST_PASSWORD,
            "next": "//evil.example/"})
        assert answer.headers["location"] == "/"


async def test_cookie_requests_need_the_csrf_token_and_pass_the_body_limits(
        app: FastAPI, settings: Settings) -> None:
    async with _client(app) as client:
        token = await _signed_in(client)
        body = {"source": "no-such-source"}
        missing = await client.post("/api/backups/database", json=body)
        assert missing.status_code == 403
        assert missing.json()["error"]["code"] == "csrf_failed"
        forged = await client.post("/api/backups/database", json=body,
                                   headers={"X-CSRF-Token": csrf_token("other", settings)})
        assert forged.status_code == 403
        # With the session's token the request reaches the route (which judges the body).
        sent = await client.post("/api/backups/database", json=body,
                                 headers={"X-CSRF-Token": csrf_token(token, settings)})
        assert sent.status_code not in (401, 403), sent.text
    async with _client(app) as anonymous:
        refused = await anonymous.post("/api/backups/database", json=body)
        assert refused.status_code == 401


async def test_bearer_clients_need_no_csrf_token(app: FastAPI, admin: Account) -> None:
    async with _client(app) as client:
        answer = await client.patch("/api/schedules/000000000000000000000000",
                                    json={"enabled": False}, headers=admin.headers)
        assert answer.status_code == 404


async def test_an_expired_session_goes_back_to_sign_in(app: FastAPI,
                                                       settings: Settings) -> None:
    async with _client(app) as client:
        token = await _signed_in(client, Role.viewer)
        claims = jwt.decode(token, options={"verify_signature": False})
        claims["exp"] = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
        expired = jwt.encode(claims, settings.auth.jwt_secret.get_secret_value(),
                             algorithm="HS256")
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, expired)
        page = await client.get("/backups?status=failed")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/backups%3Fstatus%3Dfailed"
        assert f'{SESSION_COOKIE}=""' in page.headers["set-cookie"]
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, expired)
        partial = await client.get("/partials/active", headers={
            "HX-Request": "true", "HX-Current-URL": "http://backvault.test/jobs"})
        assert partial.status_code == 204
        assert partial.headers["hx-redirect"] == "/login?next=/jobs"
        assert (await client.get("/api/auth/me")).status_code == 401


async def test_sign_out_needs_the_csrf_token_and_clears_the_cookie(
        app: FastAPI, settings: Settings) -> None:
    async with _client(app) as client:
        token = await _signed_in(client, Role.viewer)
        assert (await client.post("/logout")).status_code == 403
        assert client.cookies.get(SESSION_COOKIE) == token
        out = await client.post("/logout", data={"csrf": csrf_token(token, settings)})
        assert out.status_code == 303
        assert out.headers["location"] == "/login"
        assert client.cookies.get(SESSION_COOKIE) is None
        assert (await client.get("/")).status_code == 303
        # The token itself ended with the session: a copy of the cookie is refused too.
        copied = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert copied.status_code == 401
        assert copied.json()["error"]["message"] == "Token has been revoked"


async def test_a_sign_in_posted_from_another_site_is_refused(app: FastAPI) -> None:
    async with _client(app) as client:
        username = await _user(Role.viewer)
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            answer = await client.post("/login", headers=headers, data={
                "username": username, "password": TEST_PASSWORD})
            assert answer.status_code == 403
            assert client.cookies.get(SESSION_COOKIE) is None
        same = await client.post("/login", headers={"Origin": "http://backvault.test"},
                                 data={"username": username, "password": TEST_PASSWORD})
        assert same.status_code == 303


@pytest.fixture
async def strict_logins(app: FastAPI, settings: Settings) -> AsyncIterator[LoginSettings]:
    async with throttled_logins(app, settings, free_failures=3) as limits:
        yield limits


async def test_console_sign_in_is_throttled_like_the_token_endpoint(
        app: FastAPI, strict_logins: LoginSettings) -> None:
    username = await _user(Role.viewer)
    async with _client(app) as client:
        for _ in range(strict_logins.free_failures):
            failed = await client.post("/login", data={"username": username,
                                                       "password": "wrong-password"})
            assert failed.status_code == 401
            assert "Incorrect username or password" in failed.text
        blocked = await client.post("/login", data={"username": username,
                                                    "password": TEST_PASSWORD})
        assert blocked.status_code == 429
        assert "Too many failed logins" in blocked.text
        assert SESSION_COOKIE not in client.cookies
    async with _client(app) as elsewhere:
        token = await elsewhere.post("/api/auth/token", data={"username": username,
                                                             "password": TEST_PASSWORD})
        assert token.status_code == 429


async def test_cron_preview_gives_the_next_five_fire_times(client: httpx.AsyncClient,
                                                           viewer: Account) -> None:
    answer = await client.get("/api/schedules/preview", headers=viewer.headers,
                              params={"cron": "30 2 * * 0", "timezone": "Europe/Berlin"})
    assert answer.status_code == 200, answer.text
    runs = [datetime.fromisoformat(t) for t in answer.json()["nextRuns"]]
    assert len(runs) == 5
    assert runs == sorted(runs)
    assert runs[0] > datetime.now(UTC)
    # Crontab's 0 is Sunday, in the schedule's own time zone.
    assert all(r.weekday() == 6 and (r.hour, r.minute) == (2, 30) for r in runs)
    assert [(b - a).days for a, b in zip(runs, runs[1:], strict=False)] == [7, 7, 7, 7]


async def test_cron_preview_names_what_is_wrong(client: httpx.AsyncClient,
                                                viewer: Account) -> None:
    bad = await client.get("/api/schedules/preview", headers=viewer.headers,
                           params={"cron": "61 3 * * *"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "validation_error"
    assert "minute" in bad.json()["error"]["message"]
    zone = await client.get("/api/schedules/preview", headers=viewer.headers,
                            params={"cron": "0 3 * * *", "timezone": "Mars/Olympus"})
    assert zone.status_code == 422
    assert (await client.get("/api/schedules/preview",
                             params={"cron": "0 3 * * *"})).status_code == 401


async def test_assets_are_served_by_the_app(client: httpx.AsyncClient) -> None:
    htmx = await client.get("/static/vendor/htmx.min.js", headers={"Accept-Encoding": "gzip"})
    assert htmx.status_code == 200
    assert htmx.headers["content-encoding"] == "gzip"
    assert "htmx" in htmx.text  # httpx decodes it
    plain = await client.get("/static/vendor/htmx.min.js",
                             headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.text == htmx.text
    for path in ("/static/console.js", "/static/console.css"):
        assert (await client.get(path)).status_code == 200


async def test_a_page_id_that_is_no_id_is_refused_not_a_500(app: FastAPI) -> None:
    async with _client(app) as client:
        await _signed_in(client, Role.viewer)
        for path in ("/backups/%00", "/jobs/x%3Fy", "/schedules/%00", "/partials/jobs/%00"):
            answer = await client.get(path)
            assert answer.status_code == 422, path
            assert answer.json()["error"]["code"] == "validation_error"


async def test_the_sources_page_shows_each_pitr_window(app: FastAPI) -> None:
    source = f"pitrpage{uuid.uuid4().hex[:6]}"
    segments = [WalSegment(id=f"{source}:{name}", source=source, timeline=1, segment=name,
                           start_lsn=n * 16 * 2**20, end_lsn=(n + 1) * 16 * 2**20,
                           size=16 * 2**20, sha256="0" * 64, storage_target="local",
                           key=f"wal/{source}/{name}") for n, name in (
        (1, "000000010000000000000001"), (3, "000000010000000000000003"))]
    for segment in segments:
        await segment.insert()
    try:
        async with _client(app) as client:
            await _signed_in(client, Role.viewer)
            page = await client.get("/sources")
        assert page.status_code == 200
        assert "Point-in-time recovery" in page.text
        row = page.text.split(f"<td>{source}</td>", 1)[1].split("</tr>", 1)[0]
        assert "000000010000000000000002" in row  # the gap between the two segments
        assert "not running" in row  # no replica archives it
    finally:
        for segment in segments:
            await segment.delete()
