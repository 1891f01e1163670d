"""Helpers for the request-limit and login tests: a real server process, raw HTTP over a
socket (to send headers without the body, or a body slowly), and clients from other
addresses."""

import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo import MongoClient

from app.config import LoginSettings, Settings
from tests.support.receivers import free_port, wait_until_serving
from tests.support.settings import MONGO_URI


@dataclass
class Server:
    host: str
    port: int
    log_path: Path
    owner_password: str

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def token(self) -> str:
        answer = httpx.post(f"{self.base}/api/auth/token",
                            data={"username": "owner", "password": self.owner_password})
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token


@contextmanager
def running_server(workdir: Path, **env_settings: str) -> Iterator[Server]:
    """`backvault serve` on a free loopback port with its own catalog; BACKUP_* from kwargs."""
    port = free_port()
    database = f"backvault_limits_{uuid.uuid4().hex[:8]}"
    password = "limits-owner-" + uuid.uuid4().hex[:12]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({
        "BACKUP_SYSTEM__ENVIRONMENT": "production",
        "BACKUP_SYSTEM__ENABLED": "false",
        "BACKUP_CATALOG__MONGO_URI": MONGO_URI,
        "BACKUP_CATALOG__DATABASE": database,
        "BACKUP_AUTH__JWT_SECRET": "limits-jwt-secret-" + uuid.uuid4().hex,
        "BACKUP_AUTH__BOOTSTRAP_USERNAME": "owner",
        "BACKUP_AUTH__BOOTSTRAP_PASSWORD": password,
        "BACKUP_STORAGE__LOCAL_DIR": str(workdir / "store"),
        "BACKUP_STORAGE__SPOOL_DIR": str(workdir / "spool"),
    })
    env.update({f"BACKUP_{k.upper()}": v for k, v in env_settings.items()})
    log_path = workdir / "server.log"
    cli = Path(sys.executable).parent / "backvault"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(cli), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server("127.0.0.1", port, log_path, password)
    try:
        wait_until_serving(server.base, proc, log_path)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        MongoClient(MONGO_URI).drop_database(database)


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the end of the request head to the complete answer

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(server: Server, head: str, parts: Iterable[bytes] = (),
                pause: float = 0.0, timeout: float = 20.0) -> RawAnswer:
    """Send a request head and then the given body parts (pause seconds before each),
    and read the answer, which the server may give before the body is complete."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        started = time.monotonic()
        for part in parts:
            time.sleep(pause)
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _answer_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        seconds = time.monotonic() - started
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    pairs = [line.split(": ", 1) for line in lines[1:] if ": " in line]
    headers = {name.lower(): value for name, value in pairs}
    return RawAnswer(int(lines[0].split()[1]), headers, body, seconds)


def _answer_length(data: bytes) -> int:
    head, sep, _ = data.partition(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return len(head) + len(sep) + int(value)
    return sys.maxsize


def request_head(method: str, path: str, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\n".join(lines) + "\n"


def client_from(app: FastAPI, address: str,
                base: str = "http://backvault.test") -> httpx.AsyncClient:
    """An in-process client whose requests come from this client address."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=base)


def address() -> str:
    """A random client address (a test's failed logins then block no other test)."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@asynccontextmanager
async def throttled_logins(app: FastAPI, settings: Settings,
                           free_failures: int) -> AsyncIterator[LoginSettings]:
    """The app throttles logins after `free_failures`, with a backoff long enough that a
    slow test run cannot outlive it; its settings are restored afterwards."""
    limits = LoginSettings(free_failures=free_failures, backoff_base_seconds=60,
                           window_seconds=900)
    app.state.settings = settings.model_copy(update={"login": limits})
    try:
        yield limits
    finally:
        app.state.settings = settings


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/token", json={"username": username,
                                                       "password": password})


def nested_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth
