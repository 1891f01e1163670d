"""The `backvault_pg_sftp` row of `make bench`: the PostgreSQL backup to the OpenSSH server
of scripts/services over SFTP (pinned host key, key login, partial name, fsync, rename)."""

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Row

ROOT = Path(__file__).resolve().parents[1]
SFTP_HOST = os.environ.get("BACKVAULT_SFTP_HOST", "127.0.0.1")
SFTP_PORT = int(os.environ.get("BACKVAULT_SFTP_PORT", "52222"))
SFTP_USER = os.environ.get("BACKVAULT_SFTP_USER", "backvault-sftp")
SFTP_KEY_FILE = Path(os.environ.get("BACKVAULT_SFTP_KEY_FILE", ROOT / ".data/sftp/client_key"))
SFTP_KNOWN_HOST_FILE = ROOT / ".data/sftp/known_host"

Backvault = Callable[[dict[str, str], str, str, str], "Row"]


def sftp_target(directory: str) -> dict[str, str | int]:
    known_host = (os.environ.get("BACKVAULT_SFTP_KNOWN_HOST")
                  or SFTP_KNOWN_HOST_FILE.read_text().strip())
    return {"name": "bench-sftp", "kind": "sftp", "sftp_host": SFTP_HOST,
            "sftp_port": SFTP_PORT, "sftp_user": SFTP_USER, "sftp_known_host": known_host,
            "sftp_private_key": SFTP_KEY_FILE.read_text(), "sftp_dir": directory}


def sftp_env(base_env: dict[str, str], directory: str) -> dict[str, str]:
    """The bench environment with the sftp target as the default (secrets in the
    environment, never in arguments)."""
    return {**base_env, "BACKUP_STORAGE__TARGETS": json.dumps([sftp_target(directory)]),
            "BACKUP_STORAGE__DEFAULT_TARGET": "bench-sftp"}


async def remove_directory(directory: str) -> None:
    """Deletes what the runs stored, through SFTP like everything else."""
    from app.config import StorageTargetSettings
    from app.services.storage.sftp import SftpStorage

    storage = SftpStorage.from_target(
        StorageTargetSettings.model_validate(sftp_target(directory)))
    sftp = await storage.session.client()
    await sftp.rmtree(storage.root, ignore_errors=True)
    await storage.close()


def sftp_row(backvault: Backvault, base_env: dict[str, str], level: int) -> "Row":
    directory = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        return backvault(sftp_env(base_env, directory), "bench-pg", "backvault_pg_sftp",
                         f"zstd {level} + age + SHA-256 to OpenSSH over SFTP, fsync + rename")
    finally:
        asyncio.run(remove_directory(directory))
