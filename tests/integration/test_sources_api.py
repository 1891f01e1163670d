"""GET /api/sources lists where each source is and never its credentials; POST
/api/sources/{name}/test reaches the real servers, bounded in time, and says why not."""

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings
from app.main import create_app
from app.models.schedule import ScheduleKind
from app.services.ops.probes import probe_database, scrub
from tests.support.accounts import Account
from tests.support.dashboard import add_backup, add_schedule, clear_schedules
from tests.support.settings import IPFS_API, MONGO_DB, PG_DB, PG_URI, make_settings

pytestmark = pytest.mark.usefixtures("empty_catalog")

SECRETS = ("pg-Src-pw-7731", "ssl-pw-9924", "mongo-Src-pw-5512", "mongo%2Fslash-pw")
PG_HOST_URI = PG_URI.rsplit("@", 1)[1].rsplit("/", 1)[0]  # 127.0.0.1:55432


def secret_settings(base: Settings) -> Settings:
    """The catalog of `base` with sources whose URIs are full of credentials."""
    return make_settings(
        catalog={"mongo_uri": base.catalog.mongo_uri, "database": base.catalog.database},
        sources=[
            {"name": "app-pg", "kind": "postgres",
             "uri": f"postgresql://backvault:pg-Src-pw-7731@{PG_HOST_URI}/appdb"
                    "?sslmode=disable&sslpassword=ssl-pw-9924"},
            {"name": "app-mongo", "kind": "mongodb",
             "uri": "mongodb://u:mongo-Src-pw-5512@[::1]:27018,h2:27019/app?authSource=admin"},
            {"name": "slashed", "kind": "mongodb",
             "uri": "mongodb://u:mongo%2Fslash-pw@db.internal/app", "enabled": False},
        ],
        content={"sources": [{"name": "pins", "kind": "kubo_pins", "kubo_api": IPFS_API}]})


@pytest.fixture
async def other_app(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A second app object over the same (initialised) catalog with those sources."""
    other = create_app(secret_settings(settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other),
                                 base_url="http://backvault.test") as client:
        yield client


@pytest.fixture
async def daily_pg_schedule(app: FastAPI) -> AsyncIterator[None]:
    await clear_schedules()
    await add_schedule("daily-pg", ScheduleKind.database, "0 3 * * *", ["pg"])
    yield
    await clear_schedules()


@pytest.mark.usefixtures("daily_pg_schedule")
async def test_sources_list_where_and_when(client: httpx.AsyncClient, viewer: Account) -> None:
    good = await add_backup("pg", "completed", timedelta(hours=2), stored=10)
    await add_backup("pg", "failed", timedelta(hours=1))
    before = datetime.now(UTC)
    response = await client.get("/api/sources", headers=viewer.headers)
    assert response.status_code == 200, response.text
    assert "backvault:backvault@" not in response.text
    sources = {s["name"]: s for s in response.json()}
    assert set(sources) == {"pg", "mongo", "catalog", "ipfs-files", "gaia-files"}
    pg = sources["pg"]
    assert (pg["kind"], pg["category"], pg["host"], pg["port"], pg["database"]) == (
        "postgres", "database", "127.0.0.1", 55432, PG_DB)
    assert (pg["enabled"], pg["managed"]) == (True, "environment")
    assert pg["lastGoodBackup"]["id"] == str(good.id)  # the newer one failed
    at = datetime.combine(before.date(), clock(3), tzinfo=UTC)
    assert datetime.fromisoformat(pg["nextRun"]) == (at if at > before else at + timedelta(1))
    mongo = sources["mongo"]
    assert (mongo["host"], mongo["port"], mongo["database"]) == ("127.0.0.1", 57017, MONGO_DB)
    assert (mongo["lastGoodBackup"], mongo["nextRun"]) == (None, None)
    ipfs = sources["ipfs-files"]
    assert (ipfs["category"], ipfs["kind"], ipfs["contentType"]) == (
        "content", "mongo_query", "ipfs")
    assert (ipfs["host"], ipfs["port"]) == ("127.0.0.1", 58080)  # its gateway


async def test_sources_never_show_credentials(other_app: httpx.AsyncClient,
                                              viewer: Account) -> None:
    response = await other_app.get("/api/sources", headers=viewer.headers)
    assert response.status_code == 200
    for secret in SECRETS:
        assert secret not in response.text
    assert "slash-pw" not in response.text
    sources = {s["name"]: s for s in response.json()}
    assert (sources["app-pg"]["host"], sources["app-pg"]["port"],
            sources["app-pg"]["database"]) == ("127.0.0.1", 55432, "appdb")
    assert (sources["app-mongo"]["host"], sources["app-mongo"]["port"]) == ("::1", 27018)
    assert (sources["slashed"]["host"], sources["slashed"]["port"],
            sources["slashed"]["enabled"]) == ("db.internal", None, False)


@pytest.mark.usefixtures("source_databases")
async def test_connection_test_reaches_the_real_servers(client: httpx.AsyncClient,
                                                        admin: Account) -> None:
    pg = (await client.post("/api/sources/pg/test", headers=admin.headers)).json()
    assert (pg["name"], pg["kind"], pg["reachable"], pg["error"]) == (
        "pg", "postgres", True, None)
    assert pg["serverVersion"].startswith("15")
    assert 0 < pg["latencyMs"] < 5000
    mongo = (await client.post("/api/sources/mongo/test", headers=admin.headers)).json()
    assert (mongo["reachable"], mongo["kind"]) == (True, "mongodb")
    assert mongo["serverVersion"]
    ipfs = (await client.post("/api/sources/ipfs-files/test", headers=admin.headers)).json()
    assert (ipfs["reachable"], ipfs["kind"]) == (True, "mongo_query")


async def test_connection_test_needs_admin_and_a_known_source(
        client: httpx.AsyncClient, viewer: Account, admin: Account) -> None:
    refused = await client.post("/api/sources/pg/test", headers=viewer.headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    unknown = await client.post("/api/sources/nope/test", headers=admin.headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    invalid = await client.post("/api/sources/Not%20A%20Name/test", headers=admin.headers)
    assert invalid.status_code == 422


async def test_a_refused_login_says_why_without_the_password(
        other_app: httpx.AsyncClient, admin: Account) -> None:
    response = await other_app.post("/api/sources/app-pg/test", headers=admin.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["reachable"] is False
    assert "password authentication failed" in body["error"]
    for secret in SECRETS:
        assert secret not in response.text


async def test_a_kubo_source_reports_its_version(other_app: httpx.AsyncClient,
                                                 admin: Account) -> None:
    body = (await other_app.post("/api/sources/pins/test", headers=admin.headers)).json()
    assert (body["kind"], body["reachable"]) == ("kubo_pins", True)
    assert body["serverVersion"].startswith("kubo 0.")
    listed = {s["name"]: s for s in (await other_app.get("/api/sources",
                                                         headers=admin.headers)).json()}
    assert (listed["pins"]["host"], listed["pins"]["port"]) == ("127.0.0.1", 55001)


async def test_a_silent_server_is_given_up_on_in_time() -> None:
    """A server that accepts the connection and never answers: the probe's timeout holds."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = SourceSettings(name="silent", kind=SourceKind("postgres"),
                            uri=SecretStr(f"postgresql://u:silent-pw-4410@127.0.0.1:{port}/x"))
    started = time.monotonic()
    result = await probe_database(source, timeout=0.5)
    assert time.monotonic() - started < 10  # not forever (a loaded machine is slow)
    assert result.reachable is False
    assert result.error == "no answer within 0.5 s"
    server.close()
    for writer in held:
        writer.close()


def test_scrub_removes_every_form_of_the_credentials() -> None:
    uri = "postgresql://user:p%40ss-word@h/db?sslpassword=ssl-secret"
    text = "failed for user:p%40ss-word and p@ss-word, ssl-secret"
    assert scrub(text, uri) == "failed for *** and ***, ***"
