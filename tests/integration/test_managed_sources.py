"""Sources added at runtime: sealed URI never returned, backed up without a restart,
environment sources read-only, removal confirmed and refused while schedules use it."""

import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings, SourceKind
from app.config.managed import set_managed_sources
from app.models.drill import RestoreDrill
from app.models.managed_source import ManagedSource, ManagedSourceCreate
from app.services.catalog import managed_sources
from app.services.catalog.managed_sources import SourceStoreDisabledError
from tests.support.accounts import Account
from tests.support.jobs import wait_job
from tests.support.settings import PG_DB, RUN, make_settings, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases")
PASSWORD = "backvault"  # the local server's; it must appear in no answer


def body(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "kind": "postgres", "uri": pg_uri(PG_DB), **extra}


async def test_an_added_source_is_backed_up_and_its_uri_never_comes_back(
        client: httpx.AsyncClient, admin: Account, settings: Settings) -> None:
    name = f"rt-{RUN}"
    added = await client.post("/api/sources", json=body(name), headers=admin.headers)
    assert added.status_code == 201, added.text
    assert PASSWORD not in added.text
    assert "postgresql://" not in added.text
    assert added.json()["host"] == "127.0.0.1"
    assert added.json()["database"] == PG_DB
    stored = await ManagedSource.find_one({"name": name})
    assert stored is not None
    assert PASSWORD not in stored.sealed_uri
    listed = await client.get("/api/sources/managed", headers=admin.headers)
    assert name in [s["name"] for s in listed.json()]
    assert PASSWORD not in listed.text

    # Another replica has not seen it yet; its periodic refresh reads it from the catalog.
    set_managed_sources(settings.catalog.database, [])
    assert settings.source(name) is None
    await managed_sources.refresh(settings)
    assert settings.source(name) is not None

    started = await client.post("/api/backups/database", json={"source": name},
                                headers=admin.headers)
    assert started.status_code == 202, started.text
    job = await wait_job(client, admin.headers, started.json()["id"])
    assert job["status"] == "completed", job

    backup = (await client.get(f"/api/backups/{job['backupId']}", headers=admin.headers)).json()
    assert backup["server"] == "127.0.0.1:" + pg_uri(PG_DB).split(":")[3].split("/")[0]

    # Pointed at another server, the source's backups are never drilled onto it (an admin
    # must not get a backup restored in plaintext onto a server of their choosing).
    moved = await client.patch(f"/api/sources/{name}", headers=admin.headers,
                               json={"uri": pg_uri(PG_DB).replace("127.0.0.1", "localhost")})
    assert moved.status_code == 200, moved.text
    drill = await client.post("/api/drills?wait=true", json={"source": name},
                              headers=admin.headers)
    assert drill.json()["status"] == "failed"
    assert "the backup came from 127.0.0.1" in drill.json()["error"]
    await RestoreDrill.find({"source": name}).delete()  # health reads drills: none outlives

    assert (await client.delete(f"/api/sources/{name}", headers=admin.headers)
            ).json()["error"]["code"] == "confirmation_required"
    gone = await client.delete(f"/api/sources/{name}?confirm={name}", headers=admin.headers)
    assert gone.status_code == 204
    assert settings.source(name) is None
    # Its backup stays.
    backups = await client.get(f"/api/backups?source={name}", headers=admin.headers)
    assert backups.json()["total"] == 1


async def test_invalid_and_read_only_changes_are_refused(
        client: httpx.AsyncClient, admin: Account, viewer: Account) -> None:
    name = f"rt2-{RUN}"
    assert (await client.post("/api/sources", json=body(name), headers=viewer.headers)
            ).status_code == 403
    wrong = await client.post("/api/sources", json=body(name, uri="mongodb://h/db"),
                              headers=admin.headers)
    assert wrong.status_code == 422
    assert "URI must start with" in wrong.text
    clash = await client.post("/api/sources", json=body("pg"), headers=admin.headers)
    assert clash.status_code == 409
    assert clash.json()["error"]["details"]["managed"] == "environment"
    for call in (client.patch("/api/sources/pg", json={"enabled": False},
                              headers=admin.headers),
                 client.delete("/api/sources/pg?confirm=pg", headers=admin.headers)):
        assert (await call).status_code == 409
    assert (await client.patch("/api/sources/nope", json={"enabled": False},
                               headers=admin.headers)).status_code == 404
    assert (await client.post("/api/sources", json=body(name, copyTargets=["nowhere"]),
                              headers=admin.headers)).status_code == 422

    assert (await client.post("/api/sources", json=body(name), headers=admin.headers)
            ).status_code == 201
    nulled = await client.patch(f"/api/sources/{name}", json={"uri": None},
                                headers=admin.headers)
    assert nulled.status_code == 422
    off = await client.patch(f"/api/sources/{name}", json={"enabled": False},
                             headers=admin.headers)
    assert off.status_code == 200
    assert off.json()["enabled"] is False
    schedule = await client.post("/api/schedules", json={
        "name": f"uses-{name}", "kind": "database", "cron": "0 3 * * *", "sources": [name]},
        headers=admin.headers)
    assert schedule.status_code == 201, schedule.text
    used = await client.delete(f"/api/sources/{name}?confirm={name}", headers=admin.headers)
    assert used.status_code == 409
    assert schedule.json()["id"] in used.text
    await client.delete(f"/api/schedules/{schedule.json()['id']}", headers=admin.headers)
    assert (await client.delete(f"/api/sources/{name}?confirm={name}",
                                headers=admin.headers)).status_code == 204


async def test_a_stored_source_that_cannot_be_opened_does_not_hide_the_others(
        client: httpx.AsyncClient, admin: Account, settings: Settings) -> None:
    good = f"rt3-{RUN}"
    assert (await client.post("/api/sources", json=body(good), headers=admin.headers)
            ).status_code == 201
    broken = ManagedSource(name=f"rt4-{RUN}", kind="postgres", sealed_uri="bm90IGFnZQ==")
    await broken.insert()
    try:
        assert await managed_sources.refresh(settings) >= 1
        assert settings.source(good) is not None
        assert settings.source(broken.name) is None
    finally:
        await broken.delete()
        await client.delete(f"/api/sources/{good}?confirm={good}", headers=admin.headers)


async def test_without_a_key_sources_come_from_the_environment_only() -> None:
    settings = make_settings(source_store={})
    request = ManagedSourceCreate(name="x", kind=SourceKind("postgres"),
                                  uri=SecretStr(pg_uri(PG_DB)))
    with pytest.raises(SourceStoreDisabledError):
        await managed_sources.create(settings, request, "admin")
