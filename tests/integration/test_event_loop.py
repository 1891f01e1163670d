"""Blocking work stays off the event loop: while a login (argon2), a password change or
the first notification (importing apprise) runs, the loop keeps ticking."""

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.models.user import Role
from app.services.access.auth import hash_password, verify_password
from tests.support.accounts import TEST_PASSWORD, Account
from tests.support.event_loop import LoopWatch
from tests.support.receivers import HttpReceiver

# Far below one argon2 check (~0.1 s here): a check on the loop would show as a gap.
MAX_GAP = 0.05
# Importing apprise in a thread still costs the loop waits for the GIL of 40-60 ms
# (measured); on the loop the same import stalls it 0.18 s: this bound tells them apart.
MAX_IMPORT_GAP = 0.1


def argon2_seconds() -> float:
    """How long one argon2 check takes on this machine."""
    stored = hash_password(TEST_PASSWORD)
    started = time.perf_counter()
    verify_password(TEST_PASSWORD, stored)
    return time.perf_counter() - started


async def test_logins_leave_the_loop_free(client: httpx.AsyncClient,
                                          accounts: dict[Role, Account]) -> None:
    assert argon2_seconds() > MAX_GAP, "argon2 is too fast here for this test to prove much"
    name = accounts[Role.viewer].user.username
    async with LoopWatch() as watch:
        for _ in range(3):
            answer = await client.post("/api/auth/token",
                                       json={"username": name, "password": TEST_PASSWORD})
            assert answer.status_code == 200, answer.text
        unknown = await client.post("/api/auth/token",
                                    json={"username": "nobody-here", "password": "x" * 12})
        assert unknown.status_code == 401
    assert watch.ticks > 0
    assert watch.longest < MAX_GAP, f"the loop stalled for {watch.longest * 1000:.0f} ms"


async def test_user_creation_and_password_change_leave_the_loop_free(
        client: httpx.AsyncClient, superadmin: Account) -> None:
    async with LoopWatch() as watch:
        created = await client.post("/api/auth/users", headers=superadmin.headers, json={
            "username": f"loop-{time.time_ns()}", "password": TEST_PASSWORD,
            "role": "viewer", "email": "loop@example.com"})
        assert created.status_code == 201, created.text
        answer = await client.post(f"/api/auth/users/{created.json()['id']}/password",
                                   headers=superadmin.headers,
                                   json={"password": TEST_PASSWORD + " again"})
        assert answer.status_code == 200, answer.text
    assert watch.longest < MAX_GAP, f"the loop stalled for {watch.longest * 1000:.0f} ms"


async def test_first_notification_leaves_the_loop_free() -> None:
    """In a fresh process: importing apprise and its plugins happens in a thread."""
    with HttpReceiver() as receiver:
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.event_loop", receiver.url(),
            cwd=Path(__file__).parents[2], stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(probe.communicate(), 60)
        assert probe.returncode == 0, err.decode()[-2000:]
        report = json.loads(out.decode().strip().splitlines()[-1])
        assert report["delivered"] is True
        assert report["appriseLoaded"] is True
        assert len(receiver.bodies) == 1
    assert report["longestGap"] < MAX_IMPORT_GAP, report


@pytest.mark.parametrize("gap", [0.2])
async def test_the_watch_sees_a_blocked_loop(gap: float) -> None:
    """The ticker itself notices a stall (so a pass above means something)."""
    async with LoopWatch() as watch:
        await asyncio.sleep(0.02)
        time.sleep(gap)
    assert watch.longest >= gap * 0.9
