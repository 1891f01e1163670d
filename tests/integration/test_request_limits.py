"""Finding 6: no single request can tie up the service with its body.

Size, time and anonymous-body limits are checked against a real server process over a raw
socket, because the in-process transport reads a body whole before the app sees it.
"""

import json
from collections.abc import Iterator

import httpx
import jwt
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.errors import install_error_handlers
from tests.support.accounts import Account
from tests.support.requests_login import (
    Server,
    nested_json,
    raw_request,
    request_head,
    running_server,
)

BODY_TIMEOUT = 1.5
SCHEDULE = b'{"name": "x", "kind": "health_check", "cron": "0 3 * * *"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("limits"),
                        http__body_timeout_seconds=str(BODY_TIMEOUT)) as running:
        yield running


def assert_refused(answer_status: int, body: dict[str, object], status: int, code: str) -> None:
    assert answer_status == status, body
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["message"]


def test_huge_declared_body_is_413_without_reading_it(server: Server) -> None:
    # 200 MB announced, not one byte of it sent: the answer cannot have waited for it.
    head = request_head("POST", "/api/auth/token", {
        "Content-Type": "application/json", "Content-Length": str(200 * 1024 * 1024)})
    answer = raw_request(server, head)
    assert_refused(answer.status, answer.json(), 413, "payload_too_large")
    assert answer.json()["error"]["details"] == {"maxBytes": 1024 * 1024}
    assert answer.headers["connection"] == "close"
    assert answer.seconds < 2


def test_chunked_body_is_413_once_past_the_limit(server: Server) -> None:
    # 17 chunks of 64 KiB pass 1 MiB; the final empty chunk is never sent.
    chunk = b"x" * 65536
    parts = [b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(17)]
    head = request_head("POST", "/api/schedules", {
        "Authorization": f"Bearer {server.token()}", "Content-Type": "application/json",
        "Transfer-Encoding": "chunked"})
    answer = raw_request(server, head, parts)
    assert_refused(answer.status, answer.json(), 413, "payload_too_large")


def test_chunked_body_under_the_limit_still_works(server: Server) -> None:
    head = request_head("POST", "/api/schedules", {
        "Authorization": f"Bearer {server.token()}", "Content-Type": "application/json",
        "Transfer-Encoding": "chunked"})
    answer = raw_request(server, head, [b"%x\r\n" % len(SCHEDULE) + SCHEDULE + b"\r\n0\r\n\r\n"])
    assert answer.status == 201, answer.body


def test_body_without_token_is_401_before_it_is_read(server: Server) -> None:
    head = request_head("POST", "/api/schedules", {
        "Content-Type": "application/json", "Content-Length": "900000"})
    answer = raw_request(server, head)
    assert_refused(answer.status, answer.json(), 401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.seconds < 2
    forged = jwt.encode({"sub": "x", "exp": 4102444800}, "not-the-secret-but-long-enough!!",
                        algorithm="HS256")
    head = request_head("POST", "/api/schedules", {
        "Authorization": f"Bearer {forged}", "Content-Length": "900000"})
    assert raw_request(server, head).status == 401


def test_slow_body_is_408(server: Server) -> None:
    head = request_head("POST", "/api/schedules", {
        "Authorization": f"Bearer {server.token()}", "Content-Type": "application/json",
        "Content-Length": str(len(SCHEDULE))})
    # Half the body, then nothing: the server gives up after body_timeout_seconds.
    answer = raw_request(server, head, [SCHEDULE[:10]])
    assert_refused(answer.status, answer.json(), 408, "request_timeout")
    assert BODY_TIMEOUT - 0.1 <= answer.seconds < BODY_TIMEOUT + 3


def test_server_still_answers_after_the_refusals(server: Server) -> None:
    assert httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200
    listing = httpx.get(f"{server.base}/api/schedules",
                        headers={"Authorization": f"Bearer {server.token()}"})
    assert listing.status_code == 200


async def test_body_over_the_limit_is_413_in_process(client: httpx.AsyncClient,
                                                     admin: Account) -> None:
    answer = await client.post("/api/schedules", headers=admin.headers,
                               content=b" " * (1024 * 1024 + 1))
    assert_refused(answer.status_code, answer.json(), 413, "payload_too_large")


@pytest.mark.parametrize("path", ["/api/schedules", "/api/auth/token"])
async def test_deeply_nested_json_is_400(client: httpx.AsyncClient, admin: Account,
                                         path: str) -> None:
    for content_type in ("application/json", None):
        headers = {**admin.headers, **({"Content-Type": content_type} if content_type else {})}
        answer = await client.post(path, headers=headers, content=nested_json(10_000))
        assert_refused(answer.status_code, answer.json(), 400, "bad_request")
        assert "nested" in answer.json()["error"]["message"]


async def test_brackets_inside_strings_do_not_count(client: httpx.AsyncClient,
                                                    admin: Account) -> None:
    name = "[{" * 200 + '\\"' + "]" * 10
    answer = await client.post("/api/schedules", headers={
        **admin.headers, "Content-Type": "application/json"},
        content=('{"name": "' + name + '", "kind": "health_check", "cron": "0 3 * * *"}').encode())
    assert answer.status_code != 400, answer.text
    # Depth at the limit is fine (and reaches validation); one more level is not.
    depth = 32
    ok = await client.post("/api/schedules", headers=admin.headers,
                           content=b'{"name":' + nested_json(depth - 1) + b"}")
    assert ok.status_code == 422, ok.text
    deep = await client.post("/api/schedules", headers=admin.headers,
                             content=b'{"name":' + nested_json(depth) + b"}")
    assert deep.status_code == 400, deep.text


async def test_token_whose_subject_is_no_id_is_401(client: httpx.AsyncClient,
                                                   settings: Settings, admin: Account) -> None:
    claims = jwt.decode(admin.token, options={"verify_signature": False})
    claims["sub"] = "abc"
    token = jwt.encode(claims, settings.auth.jwt_secret.get_secret_value(), algorithm="HS256")
    for method, path in [("GET", "/api/auth/me"), ("GET", "/api/backups"),
                         ("POST", "/api/schedules")]:
        answer = await client.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                      json={} if method == "POST" else None)
        assert_refused(answer.status_code, answer.json(), 401, "unauthorized")


def test_limits_do_not_apply_to_reads(server: Server) -> None:
    # A GET without a body passes untouched, streaming answers included.
    spec = httpx.get(f"{server.base}/openapi.json")
    assert spec.status_code == 200
    assert "/api/auth/token" in spec.json()["paths"]


async def test_recursion_in_json_parsing_is_400_and_elsewhere_500_without_details() -> None:
    # Behind the middleware's depth check: a route that parses deep JSON itself.
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/parse")
    async def parse() -> None:
        json.loads("[" * 100_000 + "]" * 100_000)

    @app.post("/recurse")
    async def recurse() -> None:
        def down(n: int) -> int:
            return down(n + 1) + 1

        down(0)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        parsed = await client.post("/parse")
        assert_refused(parsed.status_code, parsed.json(), 400, "bad_request")
        other = await client.post("/recurse")
        assert_refused(other.status_code, other.json(), 500, "internal_error")
        assert other.json()["error"] == {"code": "internal_error",
                                         "message": "Internal server error", "details": None}
