"""A real Backvault server process and Debian's headless Chromium driven by Playwright.

Playwright's own browsers are never downloaded: Chromium is the `chromium` Debian package
(scripts/services installs it); Playwright only brings its driver, inside the PyPI wheel.
"""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright
from pymongo import MongoClient

from tests.support.data import create_pg_database
from tests.support.receivers import free_port, wait_until_serving
from tests.support.settings import (
    AGE_KEY_FILE,
    AGE_RECIPIENT,
    MONGO_URI,
    PG_BIN,
    PG_URI,
    SOURCE_STORE_KEY,
    WORK,
    pg_uri,
)

CHROMIUM = "/usr/bin/chromium"
OWNER = "owner"
PASSWORD = "console-pass-" + uuid.uuid4().hex[:10]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass
class ConsoleServer:
    base: str
    log_path: Path
    database: str  # the PostgreSQL source's database
    jwt_secret: str
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, method: str, path: str, role: str = OWNER, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.request(method, self.base + path, headers=headers, timeout=60, **kwargs)


def _token(base: str, username: str) -> str:
    answer = httpx.post(f"{base}/api/auth/token", data={"username": username,
                                                        "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


@contextmanager
def console_server(tmp: Path, *, token_minutes: int = 30, bandwidth_mbps: float | None = None,
                   extra_sources: list[dict[str, str]] | None = None, bulk_posts: int = 0
                   ) -> Iterator[ConsoleServer]:
    """`backvault serve` with a small PostgreSQL source `shop` (and, with bulk_posts, a
    bigger one `bulk` whose backup takes a while), a viewer, an admin and the owner."""
    run = uuid.uuid4().hex[:8]
    catalog, source_db, bulk_db = f"backvault_ui_{run}", f"bv_ui_{run}", f"bv_ui_bulk_{run}"
    _in_thread(create_pg_database(PG_URI, source_db, posts=3000))
    sources = [{"name": "shop", "kind": "postgres", "uri": pg_uri(source_db)}]
    if bulk_posts:
        _in_thread(create_pg_database(PG_URI, bulk_db, posts=bulk_posts))
        sources.append({"name": "bulk", "kind": "postgres", "uri": pg_uri(bulk_db)})
    port = free_port()
    secret = "console-jwt-" + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({
        "BACKUP_SYSTEM__ENVIRONMENT": "test", "BACKUP_SYSTEM__LOG_LEVEL": "info",
        "BACKUP_CATALOG__MONGO_URI": MONGO_URI, "BACKUP_CATALOG__DATABASE": catalog,
        "BACKUP_AUTH__JWT_SECRET": secret,
        "BACKUP_AUTH__TOKEN_MINUTES": str(token_minutes),
        "BACKUP_AUTH__BOOTSTRAP_USERNAME": OWNER, "BACKUP_AUTH__BOOTSTRAP_PASSWORD": PASSWORD,
        "BACKUP_SOURCES": json.dumps([*sources, *(extra_sources or [])]),
        "BACKUP_STORAGE__LOCAL_DIR": str(WORK / f"console-store-{run}"),
        "BACKUP_STORAGE__SPOOL_DIR": str(WORK / f"console-spool-{run}"),
        "BACKUP_TOOLS__PG_BIN_DIR": PG_BIN,
        "BACKUP_ENCRYPTION__RECIPIENTS": json.dumps([AGE_RECIPIENT]),
        "BACKUP_ENCRYPTION__IDENTITY_FILE": str(AGE_KEY_FILE),
        "BACKUP_SOURCE_STORE__KEY": SOURCE_STORE_KEY.get_secret_value(),
    })
    if bandwidth_mbps is not None:
        env["BACKUP_LIMITS__BANDWIDTH_MBPS"] = str(bandwidth_mbps)
    log_path = tmp / "server.log"
    cli = Path(sys.executable).parent / "backvault"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(cli), "serve", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    server = ConsoleServer(base=f"http://127.0.0.1:{port}", log_path=log_path,
                           database=source_db, jwt_secret=secret)
    try:
        wait_until_serving(server.base, proc, log_path)
        server.tokens[OWNER] = _token(server.base, OWNER)
        for role in ("viewer", "admin"):
            made = server.api("POST", "/api/auth/users", json={
                "username": role, "password": PASSWORD, "role": role})
            assert made.status_code == 201, made.text
            server.tokens[role] = _token(server.base, role)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        MongoClient(MONGO_URI).drop_database(catalog)
        for database in (source_db, bulk_db):
            _in_thread(_drop_pg(database))


def _in_thread(work: Coroutine[Any, Any, None]) -> None:
    """Async set-up on a loop of its own thread, leaving the test session's loop alone."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


async def _drop_pg(database: str) -> None:
    conn = await asyncpg.connect(PG_URI)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Page, base: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
