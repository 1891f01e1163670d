"""Failed logins are throttled per username and per client address, with a backoff that
doubles, and are logged without the password."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import structlog
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import LoginSettings, Settings
from app.models.user import LoginFailures, Role, User, UserCreate
from app.services.access import auth as auth_service
from app.services.access import login_throttle
from tests.support.accounts import TEST_PASSWORD
from tests.support.errors import assert_error
from tests.support.requests_login import address, client_from, login, throttled_logins


@pytest.fixture
async def login_limits(app: FastAPI, settings: Settings) -> AsyncIterator[LoginSettings]:
    async with throttled_logins(app, settings, free_failures=5) as limits:
        yield limits


async def new_user(role: Role = Role.viewer) -> User:
    return await auth_service.create_user(UserCreate(
        username=f"login-{uuid.uuid4().hex[:8]}", password=SecretStr(TEST_PASSWORD), role=role))


async def test_wrong_passwords_block_the_user_with_429(app: FastAPI,
                                                       login_limits: LoginSettings) -> None:
    user = await new_user()
    async with client_from(app, address()) as client:
        for _ in range(login_limits.free_failures):
            assert_error(await login(client, user.username, "wrong-password"), 401,
                         "unauthorized")
        blocked = await login(client, user.username, "wrong-password")
        assert_error(blocked, 429, "too_many_requests")
        assert 55 <= int(blocked.headers["retry-after"]) <= 60
        # While blocked the password is not even checked: the right one gets 429 too.
        right = await login(client, user.username.upper(), TEST_PASSWORD)
        assert_error(right, 429, "too_many_requests")
    # From another address the username is still blocked (state in the catalog).
    async with client_from(app, address()) as other:
        assert_error(await login(other, user.username, TEST_PASSWORD), 429, "too_many_requests")
    stored = await LoginFailures.find_one({"key": f"user:{user.username.lower()}"})
    assert stored is not None
    assert stored.failures == login_limits.free_failures
    assert stored.blocked_until is not None


async def test_address_is_blocked_across_usernames(app: FastAPI,
                                                   login_limits: LoginSettings) -> None:
    user = await new_user()
    attacker = address()
    async with client_from(app, attacker) as client:
        for n in range(login_limits.free_failures):
            assert_error(await login(client, f"guess-{n}-{uuid.uuid4().hex[:4]}", "x" * 12),
                         401, "unauthorized")
        assert_error(await login(client, user.username, TEST_PASSWORD), 429,
                     "too_many_requests")
    async with client_from(app, address()) as elsewhere:
        assert (await login(elsewhere, user.username, TEST_PASSWORD)).status_code == 200


async def test_success_resets_the_username_counter(app: FastAPI,
                                                   login_limits: LoginSettings) -> None:
    user = await new_user()
    for _ in range(2):
        # Each attempt from its own address: only the username's counter grows.
        for _ in range(login_limits.free_failures - 1):
            async with client_from(app, address()) as client:
                assert_error(await login(client, user.username, "wrong-password"), 401,
                             "unauthorized")
        async with client_from(app, address()) as client:
            assert (await login(client, user.username, TEST_PASSWORD)).status_code == 200
    assert await LoginFailures.find_one({"key": f"user:{user.username}"}) is None


async def test_block_ends_after_the_backoff(app: FastAPI, settings: Settings) -> None:
    app.state.settings = settings.model_copy(update={"login": LoginSettings(
        free_failures=1, backoff_base_seconds=1, backoff_max_seconds=1)})
    try:
        user = await new_user()
        async with client_from(app, address()) as client:
            assert_error(await login(client, user.username, "wrong-password"), 401,
                         "unauthorized")
            assert_error(await login(client, user.username, TEST_PASSWORD), 429,
                         "too_many_requests")
            await asyncio.sleep(1.2)
            assert (await login(client, user.username, TEST_PASSWORD)).status_code == 200
    finally:
        app.state.settings = settings


def test_backoff_doubles_and_is_capped() -> None:
    limits = LoginSettings(free_failures=5, backoff_base_seconds=1, backoff_max_seconds=900)
    delays = [login_throttle.backoff_seconds(n, limits) for n in range(1, 18)]
    assert delays[:4] == [0, 0, 0, 0]
    assert delays[4:10] == [1, 2, 4, 8, 16, 32]
    assert delays[-1] == 900
    assert login_throttle.backoff_seconds(10**9, limits) == 900


async def test_failed_login_is_logged_without_the_password(app: FastAPI,
                                                           login_limits: LoginSettings) -> None:
    user = await new_user()
    where = address()
    secret_guess = "hunter2-" + uuid.uuid4().hex
    with structlog.testing.capture_logs() as logs:
        async with client_from(app, where) as client:
            assert_error(await login(client, user.username, secret_guess), 401, "unauthorized")
    failed = [e for e in logs if e["event"] == "login failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "warning"
    assert failed[0]["username"] == user.username
    assert failed[0]["client"] == where
    assert secret_guess not in repr(logs)
