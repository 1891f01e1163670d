"""Helpers of the restore and verify safety tests: backups through the API, restores,
byte flips in stored objects, settings with another identity."""

from pathlib import Path
from typing import Any

import httpx
import pyrage
from beanie import PydanticObjectId
from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings
from app.models.backup import Backup
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.jobs import wait_job
from tests.support.settings import WORK


async def backup_of(client: httpx.AsyncClient, admin: Account, source: str,
                    **options: Any) -> dict[str, Any]:
    """A completed backup of a configured source (with request options such as
    `tables`), made through the API."""
    started = await client.post("/api/backups/database", json={"source": source, **options},
                                headers=admin.headers)
    assert started.status_code == 202, started.text
    job = await wait_job(client, admin.headers, started.json()["id"])
    assert job["status"] == "completed", job
    backup: dict[str, Any] = (await client.get(f"/api/backups/{job['backupId']}",
                                               headers=admin.headers)).json()
    return backup


async def restore_call(client: httpx.AsyncClient, superadmin: Account, backup_id: str,
                       body: dict[str, Any], wait: bool = True) -> httpx.Response:
    return await client.post(f"/api/backups/{backup_id}/restore",
                             params={"wait": "true"} if wait else None,
                             json=body, headers=superadmin.headers)


async def get_backup(client: httpx.AsyncClient, account: Account,
                     backup_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/backups/{backup_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def stored_path(settings: Settings, backup: dict[str, Any]) -> Path:
    return LocalStorage(settings.storage.local_dir).root / str(backup["storageKey"])


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Damage the stored object without changing its size (middle byte by default)."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def wrong_identity(settings: Settings) -> Settings:
    """The test settings with an identity file that holds another age key."""
    other = WORK / "restore-safety-other-key.txt"
    other.write_text(f"# not the backups' key\n{pyrage.x25519.Identity.generate()}\n")
    encryption = settings.encryption.model_copy(update={"identity_file": other})
    return settings.model_copy(update={"encryption": encryption})


def with_source(settings: Settings, name: str, kind: SourceKind, uri: str) -> Settings:
    """The test settings plus one more source."""
    extra = SourceSettings(name=name, kind=kind, uri=SecretStr(uri))
    return settings.model_copy(update={"sources": [*settings.sources, extra]})


async def backup_count() -> int:
    return await Backup.find_all().count()


async def backup_document(backup_id: str) -> Backup:
    """The catalog's document of a backup made through the API."""
    found = await Backup.get(PydanticObjectId(backup_id))
    assert found is not None
    return found
