"""The real server process, started through the `backvault serve` CLI like `make run` does."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from tests.support.receivers import free_port, wait_until_serving
from tests.support.settings import MONGO_URI

JWT = "e2e-jwt-secret-" + uuid.uuid4().hex
ADMIN_PASSWORD = "e2e-admin-password-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    port = free_port()
    database = f"backvault_e2e_{uuid.uuid4().hex[:8]}"
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({
        "BACKUP_SYSTEM__ENVIRONMENT": "production",
        "BACKUP_SYSTEM__LOG_LEVEL": "debug",
        "BACKUP_CATALOG__MONGO_URI": MONGO_URI,
        "BACKUP_CATALOG__DATABASE": database,
        "BACKUP_AUTH__JWT_SECRET": JWT,
        "BACKUP_AUTH__BOOTSTRAP_USERNAME": "owner",
        "BACKUP_AUTH__BOOTSTRAP_PASSWORD": ADMIN_PASSWORD,
    })
    cli = Path(sys.executable).parent / "backvault"
    workdir = tmp_path_factory.mktemp("cwd")  # no .env there
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(cli), "serve", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, proc, log_path)
        yield base, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        MongoClient(MONGO_URI).drop_database(database)


def test_token_then_list_backups(server: tuple[str, Path]) -> None:
    base, _ = server
    token = httpx.post(f"{base}/api/auth/token",
                       data={"username": "owner", "password": ADMIN_PASSWORD})
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    listing = httpx.get(f"{base}/api/backups", headers=headers)
    assert listing.status_code == 200
    assert listing.json() == {"items": [], "page": 1, "limit": 20, "total": 0, "pages": 0}
    assert httpx.get(f"{base}/api/backups").status_code == 401


def test_docs_openapi_and_metrics_are_open(server: tuple[str, Path]) -> None:
    base, _ = server
    docs = httpx.get(f"{base}/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    spec = httpx.get(f"{base}/openapi.json").json()
    assert "/api/backups" in spec["paths"]
    assert spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"][
        "tokenUrl"] == "/api/auth/token"
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.status_code == 200
    assert "process_resident_memory_bytes" in metrics.text or "python_info" in metrics.text


def test_logs_are_json_and_hold_no_secret(server: tuple[str, Path]) -> None:
    base, log_path = server
    httpx.post(f"{base}/api/auth/token", data={"username": "owner", "password": "wrong-guess"})
    text = log_path.read_text()
    assert "bootstrap superadmin created" in text
    assert JWT not in text
    assert ADMIN_PASSWORD not in text


def test_a_client_cannot_pick_its_address_with_x_forwarded_for(
        server: tuple[str, Path]) -> None:
    # Found by probing: uvicorn believed X-Forwarded-For from 127.0.0.1, so every guess
    # could claim a new address and the per-address throttle never started.
    base, _ = server
    answers = [httpx.post(f"{base}/api/auth/token",
                          data={"username": f"nobody{i}", "password": "wrong-guess"},
                          headers={"X-Forwarded-For": f"10.1.1.{i}"}).status_code
               for i in range(8)]
    # Every guess counts against 127.0.0.1: the block starts within the free failures.
    assert 429 in answers, answers
    assert answers.index(429) <= 5, answers
