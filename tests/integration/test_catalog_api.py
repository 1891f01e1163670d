"""Catalog endpoints on seeded data: listing, filters, pagination, detail, jobs, export, errors."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId

from app.models.backup import Backup
from app.models.job import BackupJob, JobKind, JobStatus
from tests.support.accounts import Account

pytestmark = pytest.mark.usefixtures("empty_catalog")

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


async def seed(admin_id: PydanticObjectId) -> list[Backup]:
    """30 backups a day apart: statuses cycle, every third is automatic, two sources."""
    statuses = ["completed", "completed", "failed", "pending", "restored"]
    backups = []
    for i in range(30):
        backup = Backup(admin=admin_id, type="automatic" if i % 3 == 0 else "manual",
                        status=statuses[i % 5], sizeMB=float(i), created_at=T0 + timedelta(days=i),
                        source="demo-pg" if i % 2 else "demo-mongo")
        await backup.insert()
        backups.append(backup)
    return backups


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def get(client: httpx.AsyncClient, account: Account, path: str,
              **params: Any) -> httpx.Response:
    return await client.get(path, headers=account.headers, params=params)


async def test_list_is_newest_first_and_paginated(client: httpx.AsyncClient,
                                                  viewer: Account) -> None:
    backups = await seed(viewer.user.id)  # type: ignore[arg-type]
    first = (await get(client, viewer, "/api/backups", limit=7)).json()
    assert (first["total"], first["page"], first["limit"], first["pages"]) == (30, 1, 7, 5)
    assert [b["id"] for b in first["items"]] == [str(b.id) for b in backups[::-1][:7]]
    last = (await get(client, viewer, "/api/backups", limit=7, page=5)).json()
    assert [b["id"] for b in last["items"]] == [str(backups[1].id), str(backups[0].id)]
    beyond = (await get(client, viewer, "/api/backups", limit=7, page=6)).json()
    assert beyond["items"] == []
    assert beyond["total"] == 30
    item = first["items"][0]
    assert {"id", "admin", "type", "status", "sizeMB", "retentionDays", "notes", "restoredAt",
            "createdAt", "updatedAt", "source", "sha256", "verification"} <= set(item)


async def test_filters(client: httpx.AsyncClient, viewer: Account) -> None:
    await seed(viewer.user.id)  # type: ignore[arg-type]

    async def ids(**params: Any) -> list[float]:
        body = (await get(client, viewer, "/api/backups", limit=100, **params)).json()
        assert body["total"] == len(body["items"])
        return sorted(b["sizeMB"] for b in body["items"])

    assert await ids(status="failed") == [2, 7, 12, 17, 22, 27]
    assert await ids(type="automatic") == [float(i) for i in range(0, 30, 3)]
    assert await ids(source="demo-pg") == [float(i) for i in range(1, 30, 2)]
    assert await ids(status="completed") == [0, 1, 5, 6, 10, 11, 15, 16, 20, 21, 25, 26]
    window = {"from": iso(T0 + timedelta(days=10)), "to": iso(T0 + timedelta(days=12))}
    assert await ids(**window) == [10, 11, 12]
    assert await ids(status="completed", type="manual", source="demo-mongo",
                     **{"from": iso(T0)}) == [10, 16, 20, 26]


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 101}, "limit"),
    ({"limit": 0}, "limit"),
    ({"page": 0}, "page"),
    ({"status": "archived"}, "status"),
    ({"type": "weekly"}, "type"),
    ({"from": "yesterday"}, "from"),
])
async def test_bad_query_parameters_get_a_json_error(client: httpx.AsyncClient, viewer: Account,
                                                     params: dict[str, Any], field: str) -> None:
    response = await get(client, viewer, "/api/backups", **params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]
    assert error["message"].startswith(f"{field}: ")


async def test_from_after_to_is_refused(client: httpx.AsyncClient, viewer: Account) -> None:
    response = await get(client, viewer, "/api/backups",
                         **{"from": iso(T0), "to": iso(T0 - timedelta(days=1))})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "'from' must not be after 'to'"


async def test_get_one_and_not_found(client: httpx.AsyncClient, viewer: Account) -> None:
    backups = await seed(viewer.user.id)  # type: ignore[arg-type]
    one = await get(client, viewer, f"/api/backups/{backups[4].id}")
    assert one.status_code == 200
    assert one.json()["status"] == "restored"
    assert one.json()["sizeMB"] == 4.0
    missing = await get(client, viewer, f"/api/backups/{PydanticObjectId()}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    malformed = await get(client, viewer, "/api/backups/not-an-id")
    assert malformed.status_code == 422
    assert malformed.json()["error"]["details"][0]["field"] == "backup_id"


async def test_jobs_list_and_detail(client: httpx.AsyncClient, viewer: Account) -> None:
    started = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    jobs = []
    for i, (kind, status) in enumerate([(JobKind.database, JobStatus.completed),
                                        (JobKind.content, JobStatus.failed),
                                        (JobKind.database, JobStatus.running)]):
        job = BackupJob(kind=kind, status=status, source="demo-pg",
                        created_at=started + timedelta(minutes=i), started_at=started,
                        finished_at=started + timedelta(seconds=90)
                        if status is not JobStatus.running else None)
        await job.insert()
        jobs.append(job)
    listing = (await get(client, viewer, "/api/backups/jobs")).json()
    assert [j["id"] for j in listing["items"]] == [str(j.id) for j in jobs[::-1]]
    only = (await get(client, viewer, "/api/backups/jobs", kind="database",
                      status="completed")).json()
    assert [j["id"] for j in only["items"]] == [str(jobs[0].id)]
    detail = (await get(client, viewer, f"/api/backups/jobs/{jobs[0].id}")).json()
    assert detail["durationMs"] == 90_000
    assert detail["progress"]["bytesRead"] == 0
    running = (await get(client, viewer, f"/api/backups/jobs/{jobs[2].id}")).json()
    assert running["durationMs"] is None
    missing = await get(client, viewer, f"/api/backups/jobs/{PydanticObjectId()}")
    assert missing.status_code == 404
    bad = await get(client, viewer, "/api/backups/jobs", status="sleeping")
    assert bad.status_code == 422


async def test_export_streams_matching_records(client: httpx.AsyncClient,
                                               admin: Account) -> None:
    await seed(admin.user.id)  # type: ignore[arg-type]
    response = await client.post("/api/backups/export", headers=admin.headers,
                                 json={"status": "failed"})
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    body = response.json()
    assert body["count"] == 6
    assert sorted(b["sizeMB"] for b in body["backups"]) == [2, 7, 12, 17, 22, 27]
    everything = (await client.post("/api/backups/export", headers=admin.headers,
                                    json={})).json()
    assert everything["count"] == 30
    unknown = await client.post("/api/backups/export", headers=admin.headers,
                                json={"colour": "red"})
    assert unknown.status_code == 422


async def test_unknown_route_and_method_use_the_error_body(client: httpx.AsyncClient,
                                                           viewer: Account) -> None:
    missing = await client.get("/api/nothing-here", headers=viewer.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await client.put("/api/backups/jobs", headers=viewer.headers)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
