"""GET /api/backups/config shows the effective settings and never a secret."""

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.support.accounts import Account
from tests.support.settings import JWT_SECRET, make_settings

SECRETS = ("mongo-catalog-pw", "AKIAEXAMPLEKEY99", "s3-very-secret-key", "mail-pw-123",
           "pg-source-pw", "mongo-source-pw", JWT_SECRET, "root-password-for-tests")


def settings_full_of_secrets(base: Settings) -> Settings:
    return make_settings(
        catalog={"mongo_uri": "mongodb://cat:mongo-catalog-pw@127.0.0.1:57017/",
                 "database": base.catalog.database},
        storage={"backend": "s3", "s3_bucket": "b", "s3_access_key": "AKIAEXAMPLEKEY99",
                 "s3_secret_key": "s3-very-secret-key"},
        notifications={"urls": ["mailtos://user:mail-pw-123@smtp.example.com"]},
        sources=[{"name": "app-pg", "kind": "postgres",
                  "uri": "postgresql://u:pg-source-pw@127.0.0.1/app"},
                 {"name": "app-mongo", "kind": "mongodb",
                  "uri": "mongodb://u:mongo-source-pw@127.0.0.1/app"}],
    )


async def test_config_has_every_group_and_no_secret(app: FastAPI, settings: Settings,
                                                    viewer: Account) -> None:
    # A second app object over the same (already initialised) catalog, other settings.
    other = create_app(settings_full_of_secrets(settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other),
                                 base_url="http://backvault.test") as client:
        response = await client.get("/api/backups/config", headers=viewer.headers)
    assert response.status_code == 200
    for secret in SECRETS:
        assert secret not in response.text
    body = response.json()
    assert set(body) == {"system", "catalog", "sources", "tools", "storage", "compression",
                         "encryption", "schedules", "retention", "limits", "content",
                         "notifications", "auth", "http", "login", "audit", "verification",
                         "drills", "pitr", "source_store"}
    assert [s["name"] for s in body["sources"]] == ["app-pg", "app-mongo", "catalog"]
    assert {s["uri"] for s in body["sources"]} == {"<redacted>"}
    assert body["storage"]["s3_secret_key"] == "<redacted>"
    assert body["notifications"]["urls"] == ["<redacted>"]
    assert body["auth"]["jwt_secret"] == "<redacted>"
    assert body["schedules"]["weekly"] == "0 3 * * 0"
    assert body["limits"]["max_concurrent_jobs"] == 2
