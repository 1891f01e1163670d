"""Audit log: what is recorded (and what never is), who reads it, and the hash chain that
shows an edited or deleted record, also with concurrent writers and after pruning."""

import asyncio
import csv
import io
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.models.audit import AuditRecord, AuditState
from app.models.common import utcnow
from app.services.ops import audit
from tests.support.accounts import TEST_PASSWORD, Account
from tests.support.settings import MONGO_URI, WORK

WRONG_PASSWORD = "wrong-" + uuid.uuid4().hex
QUERY_SECRET = "query-secret-" + uuid.uuid4().hex


def collection() -> Any:
    return AuditRecord.get_pymongo_collection()


def agent() -> dict[str, str]:
    """A user agent unique to one test, so its records can be found among all others."""
    return {"User-Agent": f"audit-test/{uuid.uuid4().hex}"}


async def records_of(headers: dict[str, str]) -> list[dict[str, Any]]:
    cursor = collection().find({"userAgent": headers["User-Agent"]}).sort("_id", 1)
    return [doc async for doc in cursor]


def schedule_body() -> dict[str, Any]:
    return {"name": f"audit-{uuid.uuid4().hex[:12]}", "kind": "health_check",
            "cron": "0 3 * * *", "enabled": False}


@pytest.fixture
async def chain_ok(app: FastAPI) -> AsyncIterator[None]:
    """The chain verifies before and after the test (tamper tests put records back)."""
    assert (await audit.verify_chain()).ok
    yield
    report = await audit.verify_chain()
    assert report.ok, report.message


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


async def test_chain_verifies(client: httpx.AsyncClient, superadmin: Account,
                              chain_ok: None) -> None:
    report = (await client.get("/api/audit/verify", headers=superadmin.headers)).json()
    assert report["ok"] is True
    assert report["brokenSeq"] is None
    assert report["checked"] >= 1
    assert report["lastHash"] is not None


async def _three_records(client: httpx.AsyncClient, admin: Account) -> list[dict[str, Any]]:
    ua = agent()
    for _ in range(3):
        await client.post("/api/schedules", json={}, headers={**admin.headers, **ua})
    records = await records_of(ua)
    assert len(records) == 3
    return records


async def test_edited_record_is_detected(client: httpx.AsyncClient, admin: Account,
                                         superadmin: Account, chain_ok: None) -> None:
    middle = (await _three_records(client, admin))[1]
    await collection().update_one({"_id": middle["_id"]}, {"$set": {"outcome": "success"}})
    try:
        report = (await client.get("/api/audit/verify", headers=superadmin.headers)).json()
        assert report["ok"] is False
        assert report["brokenSeq"] == middle["_id"]
        assert "altered" in report["message"]
    finally:
        await collection().replace_one({"_id": middle["_id"]}, middle)


async def test_edited_record_with_recomputed_hash_breaks_the_next_link(
        client: httpx.AsyncClient, admin: Account, chain_ok: None) -> None:
    first, second, _ = await _three_records(client, admin)
    forged = {**first, "username": "someone-else"}
    forged["hash"] = audit.record_hash(forged)
    await collection().replace_one({"_id": first["_id"]}, forged)
    try:
        report = await audit.verify_chain()
        assert not report.ok
        assert report.broken_seq == second["_id"]
        assert "prevHash" in report.message
    finally:
        await collection().replace_one({"_id": first["_id"]}, first)


async def test_deleted_record_is_detected(client: httpx.AsyncClient, admin: Account,
                                          superadmin: Account, chain_ok: None) -> None:
    middle = (await _three_records(client, admin))[1]
    await collection().delete_one({"_id": middle["_id"]})
    try:
        report = (await client.get("/api/audit/verify", headers=superadmin.headers)).json()
        assert report["ok"] is False
        assert report["brokenSeq"] == middle["_id"]
        assert "missing" in report["message"]
    finally:
        await collection().insert_one(middle)


async def test_deleted_newest_record_is_detected(client: httpx.AsyncClient, admin: Account,
                                                 chain_ok: None) -> None:
    newest = (await _three_records(client, admin))[-1]
    assert await collection().count_documents({"_id": {"$gt": newest["_id"]}}) == 0
    await collection().delete_one({"_id": newest["_id"]})
    try:
        report = await audit.verify_chain()
        assert not report.ok
        assert report.broken_seq == newest["_id"]
        assert "at the end" in report.message
    finally:
        await collection().insert_one(newest)


async def test_concurrent_requests_make_a_gapless_chain(client: httpx.AsyncClient,
                                                        admin: Account,
                                                        chain_ok: None) -> None:
    ua = agent()
    responses = await asyncio.gather(*[
        client.post("/api/schedules", json={}, headers={**admin.headers, **ua})
        for _ in range(20)])
    assert {r.status_code for r in responses} == {422}
    records = await records_of(ua)
    assert len(records) == 20
    assert len({r["requestId"] for r in records}) == 20
    report = await audit.verify_chain()
    assert report.ok, report.message
    # Every record between the first and the last of the burst exists: no seq was skipped.
    span = range(records[0]["_id"], records[-1]["_id"] + 1)
    assert await collection().count_documents({"_id": {"$gte": span[0], "$lte": span[-1]}}) \
        == len(span)


async def test_pruning_keeps_the_chain_verifiable(client: httpx.AsyncClient, admin: Account,
                                                  settings: Settings, chain_ok: None) -> None:
    old, _, kept = await _three_records(client, admin)
    # "Now" such that the retention cutoff falls just after the first of the three.
    now = old["time"] + timedelta(days=settings.audit.retention_days, microseconds=1000)
    pruned = await audit.prune_audit(settings, now=now)
    assert pruned >= 1
    assert await collection().find_one({"_id": old["_id"]}) is None
    assert await collection().find_one({"_id": kept["_id"]}) is not None
    report = await audit.verify_chain()
    assert report.ok, report.message
    assert report.anchor_seq is not None
    assert report.anchor_seq >= old["_id"]
    assert report.first_seq == report.anchor_seq + 1
    # The next record continues from the anchor; pruning again with the real clock is a no-op.
    await client.post("/api/schedules", json={}, headers=admin.headers)
    assert await audit.prune_audit(settings, now=utcnow()) == 0
    assert (await audit.verify_chain()).ok


async def test_pruning_everything_then_appending(client: httpx.AsyncClient, admin: Account,
                                                 settings: Settings, chain_ok: None) -> None:
    await _three_records(client, admin)
    later = utcnow() + timedelta(days=settings.audit.retention_days + 1)
    assert await audit.prune_audit(settings, now=later) >= 3
    assert await collection().count_documents({}) == 0
    empty = await audit.verify_chain()
    assert empty.ok, empty.message
    ua = agent()
    await client.post("/api/schedules", json={}, headers={**admin.headers, **ua})
    (record,) = await records_of(ua)
    assert empty.anchor_seq is not None
    assert record["_id"] == empty.anchor_seq + 1


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


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({"BACKUP_CATALOG__MONGO_URI": MONGO_URI,
                "BACKUP_CATALOG__DATABASE": settings.catalog.database,
                "BACKUP_STORAGE__LOCAL_DIR": str(settings.storage.local_dir),
                "BACKUP_SYSTEM__LOG_LEVEL": "warning"})
    return env


async def backvault(settings: Settings, *args: str) -> tuple[int, bytes, bytes]:
    cli = Path(sys.executable).parent / "backvault"
    proc = await asyncio.create_subprocess_exec(
        str(cli), *args, env=cli_env(settings), cwd=WORK,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_cli_verify_and_export(client: httpx.AsyncClient, admin: Account,
                                     settings: Settings, chain_ok: None) -> None:
    records = await _three_records(client, admin)
    code, out, err = await backvault(settings, "audit", "verify")
    assert code == 0, err.decode()
    assert b"intact" in out

    code, out, err = await backvault(settings, "audit", "export", "--format", "csv",
                                     "--user", admin.user.username)
    assert code == 0, err.decode()
    rows = list(csv.DictReader(io.StringIO(out.decode())))
    assert {r["hash"] for r in records} <= {r["hash"] for r in rows}

    middle = records[1]
    await collection().update_one({"_id": middle["_id"]}, {"$set": {"client": "10.9.9.9"}})
    try:
        code, out, err = await backvault(settings, "audit", "verify")
        assert code == 1
        assert f"broken at record {middle['_id']}".encode() in err
    finally:
        await collection().replace_one({"_id": middle["_id"]}, middle)


async def test_damaged_head_hint_does_not_stop_recording(client: httpx.AsyncClient,
                                                         admin: Account,
                                                         chain_ok: None) -> None:
    state = AuditState.get_pymongo_collection()
    await audit.append({"time": audit.audit_time(), "action": "before", "outcome": "success"})
    head = await state.find_one({"_id": "head"})
    assert head is not None
    await state.update_one({"_id": "head"}, {"$set": {"seq": "garbage"}})
    ua = agent()
    response = await client.post("/api/schedules", json={}, headers={**admin.headers, **ua})
    assert response.status_code == 422
    (record,) = await records_of(ua)
    assert record["_id"] > head["seq"]
    assert (await audit.verify_chain()).ok
    # The hint is repaired: deleting the newest records is detected again.
    repaired = await state.find_one({"_id": "head"})
    assert repaired is not None
    assert repaired["seq"] == record["_id"]


async def test_pruning_never_removes_evidence_of_tampering(
        client: httpx.AsyncClient, admin: Account, settings: Settings,
        chain_ok: None) -> None:
    first, second, _ = await _three_records(client, admin)
    anchor_before = (await audit.verify_chain()).anchor_seq
    await collection().update_one({"_id": second["_id"]}, {"$set": {"statusCode": 200}})
    try:
        later = utcnow() + timedelta(days=settings.audit.retention_days + 1)
        await audit.prune_audit(settings, now=later)
        assert await collection().find_one({"_id": second["_id"]}) is not None
        report = await audit.verify_chain()
        assert report.broken_seq == second["_id"]
        assert report.anchor_seq is not None
        assert report.anchor_seq >= (anchor_before or 0)
        assert report.anchor_seq == first["_id"]
    finally:
        await collection().replace_one({"_id": second["_id"]}, second)


async def test_no_record_is_lost_under_bursts_of_real_changes(client: httpx.AsyncClient,
                                                              admin: Account,
                                                              chain_ok: None) -> None:
    # Found by probing: 100 PATCHes in bursts of 20 answered 200 but left 11 records.
    ua = agent()
    created = await client.post("/api/schedules", headers={**admin.headers, **ua}, json={
        "name": f"burst-{uuid.uuid4().hex[:8]}", "kind": "cleanup", "cron": "0 5 * * *"})
    assert created.status_code == 201, created.text
    path = f"/api/schedules/{created.json()['id']}"
    for burst in range(5):
        answers = await asyncio.gather(*[
            client.patch(path, json={"description": f"burst {burst}-{i}"},
                         headers={**admin.headers, **ua}) for i in range(20)])
        assert {a.status_code for a in answers} == {200}
    await client.delete(path, headers={**admin.headers, **ua})
    records = await records_of(ua)
    assert len(records) == 102
    assert sum(r["statusCode"] == 200 for r in records) == 101
    report = await audit.verify_chain()
    assert report.ok, report.message


def full_entry(action: str) -> dict[str, Any]:
    return {"time": audit.audit_time(), "userId": None, "username": "rival", "role": None,
            "action": action, "method": "POST", "path": "/api/x", "target": {}, "client": None,
            "userAgent": None, "statusCode": 200, "outcome": "success", "requestId": None,
            "details": {}}


async def test_a_seq_taken_by_another_replica_is_chained_after(
        client: httpx.AsyncClient, superadmin: Account, chain_ok: None) -> None:
    first = await audit.append(full_entry("first"))
    # Another replica appends the next record between our read of the head and our insert.
    previous = await collection().find_one({"_id": first})
    assert previous is not None
    rival = {"_id": first + 1, **full_entry("rival"), "prevHash": previous["hash"]}
    rival["hash"] = audit.record_hash(rival)
    await collection().insert_one(rival)
    seqs = await asyncio.gather(*[audit.append(full_entry(f"b{i}")) for i in range(5)])
    assert sorted(seqs) == list(range(first + 2, first + 7))
    report = await audit.verify_chain()
    assert report.ok, report.message
    # A record with fields missing (by hand, an older version) does not stop the listing.
    odd = {"_id": first + 7, "time": audit.audit_time(), "action": "odd",
           "prevHash": (await collection().find_one({"_id": first + 6}))["hash"]}
    odd["hash"] = audit.record_hash(odd)
    await collection().insert_one(odd)
    for path in ("/api/audit", "/api/audit/export?format=jsonl"):
        answer = await client.get(path, headers=superadmin.headers)
        assert answer.status_code == 200, answer.text
