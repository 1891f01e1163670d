"""Audit log: what is recorded (and what never is), who reads it, and how it is listed
and exported (the hash chain is in test_audit_chain.py)."""

import csv
import io
import json
import uuid

import httpx

from app.config import Settings
from tests.support.accounts import TEST_PASSWORD, Account
from tests.support.audit import agent, collection, records_of, schedule_body

WRONG_PASSWORD = "wrong-" + uuid.uuid4().hex
QUERY_SECRET = "query-secret-" + uuid.uuid4().hex


async def test_state_changing_requests_are_recorded(client: httpx.AsyncClient,
                                                    admin: Account) -> None:
    ua = agent()
    created = await client.post("/api/schedules", json=schedule_body(),
                                headers={**admin.headers, **ua})
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"]
    schedule_id = created.json()["id"]
    deleted = await client.delete(f"/api/schedules/{schedule_id}?reason=tidy",
                                  headers={**admin.headers, **ua})
    assert deleted.status_code == 200, deleted.text

    post, delete = await records_of(ua)
    for record in (post, delete):
        assert record["userId"] == str(admin.user.id)
        assert record["username"] == admin.user.username
        assert record["role"] == "admin"
        assert record["client"] == "127.0.0.1"
        assert record["outcome"] == "success"
    assert post["action"] == "POST /api/schedules"
    assert post["statusCode"] == 201
    assert post["requestId"] == created.headers["x-request-id"]
    assert delete["action"] == "DELETE /api/schedules/{schedule_id}"
    assert delete["target"] == {"schedule_id": schedule_id, "reason": "tidy"}
    assert delete["_id"] > post["_id"]
    assert delete["prevHash"] == post["hash"] or delete["_id"] > post["_id"] + 1


async def test_refused_and_unauthenticated_requests_are_recorded(
        client: httpx.AsyncClient, viewer: Account) -> None:
    ua = agent()
    forbidden = await client.post("/api/schedules", json=schedule_body(),
                                  headers={**viewer.headers, **ua})
    assert forbidden.status_code == 403
    anonymous = await client.post("/api/schedules", json=schedule_body(), headers=ua)
    assert anonymous.status_code == 401
    invalid = await client.post("/api/schedules", json={}, headers={**viewer.headers, **ua})
    assert invalid.status_code in (403, 422)

    denied, unauthenticated, refused = await records_of(ua)
    assert (denied["outcome"], denied["statusCode"], denied["role"]) == ("denied", 403, "viewer")
    assert denied["userId"] == str(viewer.user.id)
    assert (unauthenticated["outcome"], unauthenticated["userId"]) == ("denied", None)
    assert refused["statusCode"] == invalid.status_code


async def test_reads_are_not_recorded(client: httpx.AsyncClient, admin: Account) -> None:
    ua = agent()
    assert (await client.get("/api/schedules", headers={**admin.headers, **ua})).is_success
    assert (await client.head("/api/schedules", headers={**admin.headers, **ua})
            ).status_code in (200, 405)
    assert await records_of(ua) == []


async def test_login_attempts_are_recorded_without_the_password(
        client: httpx.AsyncClient, viewer: Account) -> None:
    ua = agent()
    username = viewer.user.username
    failed = await client.post("/api/auth/token", headers=ua,
                               json={"username": username, "password": WRONG_PASSWORD})
    assert failed.status_code in (401, 429)
    ok = await client.post("/api/auth/token", headers=ua,
                           data={"username": username, "password": TEST_PASSWORD})
    assert ok.status_code == 200, ok.text

    failure, success = await records_of(ua)
    assert failure["action"] == success["action"] == "login"
    assert failure["outcome"] == "denied"
    assert success["outcome"] == "success"
    assert failure["statusCode"] == failed.status_code
    assert success["statusCode"] == 200
    # The username comes from the token route (request.state.login_username).
    assert failure["username"] == success["username"] == username
    assert success["userId"] in (None, str(viewer.user.id))
    raw = json.dumps(await records_of(ua), default=str)
    assert WRONG_PASSWORD not in raw
    assert TEST_PASSWORD not in raw


async def test_no_secret_enters_the_log(client: httpx.AsyncClient, admin: Account) -> None:
    ua = agent()
    created = await client.post("/api/schedules", json=schedule_body(),
                                headers={**admin.headers, **ua})
    schedule_id = created.json()["id"]
    response = await client.delete(
        f"/api/schedules/{schedule_id}",
        params={"password": QUERY_SECRET, "api_key": QUERY_SECRET, "token": QUERY_SECRET,
                # Credentials under innocent names (found by probing) are not recorded either:
                # only the API's own parameters are.
                "jwt": QUERY_SECRET, "sig": QUERY_SECRET, "code": QUERY_SECRET,
                "uri": f"postgresql://u:{QUERY_SECRET}@h/db", "reason": "kept"},
        headers={**admin.headers, **ua})
    assert response.status_code == 200
    (_, delete) = await records_of(ua)
    assert delete["target"]["reason"] == "kept"
    for name in ("password", "api_key", "token", "jwt", "sig", "code", "uri"):
        assert delete["target"][name] == "<redacted>", name

    everything = json.dumps([doc async for doc in collection().find({})], default=str)
    for secret in (QUERY_SECRET, TEST_PASSWORD, WRONG_PASSWORD, admin.token):
        assert secret not in everything


async def test_only_superadmins_read_the_log(client: httpx.AsyncClient, viewer: Account,
                                             admin: Account, superadmin: Account) -> None:
    for path in ("/api/audit", "/api/audit/export?format=csv", "/api/audit/verify"):
        assert (await client.get(path)).status_code == 401
        for account in (viewer, admin):
            response = await client.get(path, headers=account.headers)
            assert response.status_code == 403, path
            assert response.json()["error"]["code"] == "forbidden"
        assert (await client.get(path, headers=superadmin.headers)).status_code == 200


async def test_list_filters_newest_first(client: httpx.AsyncClient, admin: Account,
                                         superadmin: Account) -> None:
    ua = agent()
    for _ in range(3):
        await client.post("/api/schedules", json={}, headers={**admin.headers, **ua})
    page = (await client.get("/api/audit", headers=superadmin.headers, params={
        "user": admin.user.username, "action": "post /API/schedules", "outcome": "failed",
        "limit": 500})).json()
    mine = [r for r in page["items"] if r["userAgent"] == ua["User-Agent"]]
    assert len(mine) == 3
    assert all(r["username"] == admin.user.username and r["outcome"] == "failed"
               for r in page["items"])
    seqs = [r["seq"] for r in page["items"]]
    assert seqs == sorted(seqs, reverse=True)
    bad = await client.get("/api/audit", headers=superadmin.headers,
                           params={"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"})
    assert bad.status_code == 422
    assert (await client.get("/api/audit", headers=superadmin.headers,
                             params={"outcome": "maybe"})).status_code == 422


async def test_export_jsonl_and_csv_match(client: httpx.AsyncClient, admin: Account,
                                          superadmin: Account) -> None:
    ua = agent()
    for _ in range(2):
        await client.post("/api/schedules", json={}, headers={**admin.headers, **ua})
    params = {"user": admin.user.username}
    jsonl = await client.get("/api/audit/export", headers=superadmin.headers,
                             params={**params, "format": "jsonl"})
    assert jsonl.status_code == 200
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    sheet = await client.get("/api/audit/export", headers=superadmin.headers,
                             params={**params, "format": "csv"})
    assert sheet.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(sheet.text)))

    assert [r["seq"] for r in lines] == [int(r["seq"]) for r in rows]
    assert [r["seq"] for r in lines] == sorted(r["seq"] for r in lines)
    assert {r["username"] for r in lines} == {admin.user.username}
    assert sum(r["userAgent"] == ua["User-Agent"] for r in lines) == 2
    for line, row in zip(lines, rows, strict=True):
        assert (row["hash"], row["action"], row["outcome"]) == (
            line["hash"], line["action"], line["outcome"])
        assert json.loads(row["target"]) == line["target"]

async def test_requests_refused_by_the_body_limit_are_recorded(
        client: httpx.AsyncClient, admin: Account, settings: Settings) -> None:
    ua = agent()
    body = b"{" + b" " * (settings.http.max_body_bytes + 1) + b"}"
    response = await client.post("/api/schedules", content=body,
                                 headers={**admin.headers, **ua,
                                          "Content-Type": "application/json"})
    assert response.status_code == 413
    (record,) = await records_of(ua)
    assert (record["statusCode"], record["outcome"]) == (413, "failed")
    assert record["action"] == "POST /api/schedules"  # refused before routing: the raw path
    assert record["userId"] == str(admin.user.id)  # from the token, though no route ran


async def test_streamed_responses_still_stream_and_are_recorded(
        client: httpx.AsyncClient, admin: Account) -> None:
    ua = agent()
    async with client.stream("POST", "/api/backups/export", json={},
                             headers={**admin.headers, **ua}) as response:
        assert response.status_code == 200
        chunks = [chunk async for chunk in response.aiter_bytes()]
    assert "backups" in json.loads(b"".join(chunks))
    (record,) = await records_of(ua)
    assert (record["action"], record["outcome"]) == ("POST /api/backups/export", "success")

