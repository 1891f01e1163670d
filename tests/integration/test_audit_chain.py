"""Audit log: the hash chain that shows an edited or deleted record, also with concurrent
writers, other replicas and after pruning, and the CLI that verifies and exports it."""

import asyncio
import csv
import io
import uuid
from datetime import timedelta
from typing import Any

import httpx

from app.config import Settings
from app.models.audit import AuditState
from app.models.common import utcnow
from app.services.ops import audit
from tests.support.accounts import Account
from tests.support.audit import agent, collection, records_of
from tests.support.rebuild import run_backvault


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

async def test_cli_verify_and_export(client: httpx.AsyncClient, admin: Account,
                                     settings: Settings, chain_ok: None) -> None:
    records = await _three_records(client, admin)
    code, out, err = await run_backvault(settings, "audit", "verify")
    assert code == 0, err
    assert "intact" in out

    code, out, err = await run_backvault(settings, "audit", "export", "--format", "csv",
                                     "--user", admin.user.username)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["hash"] for r in records} <= {r["hash"] for r in rows}

    middle = records[1]
    await collection().update_one({"_id": middle["_id"]}, {"$set": {"client": "10.9.9.9"}})
    try:
        code, out, err = await run_backvault(settings, "audit", "verify")
        assert code == 1
        assert f"broken at record {middle['_id']}" in err
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
