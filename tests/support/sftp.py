"""The OpenSSH server that scripts/services runs for the sftp target kind (its exports,
BACKVAULT_SFTP_*), and the storage contract's StoreKind for it."""

import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncssh

from app.services.storage import Storage
from app.services.storage.sftp import WRITE_BATCH, SftpStorage
from tests.support.settings import RUN
from tests.support.store_contract import StoreKind

_DATA = Path(__file__).parents[2] / ".data/sftp"
SFTP_HOST = os.environ.get("BACKVAULT_SFTP_HOST", "127.0.0.1")
SFTP_PORT = int(os.environ.get("BACKVAULT_SFTP_PORT", "52222"))
SFTP_USER = os.environ.get("BACKVAULT_SFTP_USER", "backvault-sftp")
SFTP_KEY_FILE = Path(os.environ.get("BACKVAULT_SFTP_KEY_FILE", _DATA / "client_key"))
SFTP_PASSWORD_FILE = Path(os.environ.get("BACKVAULT_SFTP_PASSWORD_FILE", _DATA / "password"))
# The user's home on this machine: where the files land (tests look at it directly).
SFTP_ROOT = Path(os.environ.get("BACKVAULT_SFTP_ROOT", _DATA / "home"))


def known_host() -> str:
    line = os.environ.get("BACKVAULT_SFTP_KNOWN_HOST", "")
    return line or (_DATA / "known_host").read_text().strip()


def private_key() -> str:
    return SFTP_KEY_FILE.read_text()


def locked_key(passphrase: str, key_format: str = "openssh") -> str:
    """The test user's private key, encrypted with `passphrase`."""
    key = asyncssh.import_private_key(private_key())
    return key.export_private_key(key_format, passphrase=passphrase).decode()


def password() -> str:
    return SFTP_PASSWORD_FILE.read_text().strip()


def other_key() -> asyncssh.SSHKey:
    """A key the server does not know (as a client key or as a host key)."""
    return asyncssh.generate_private_key("ssh-ed25519")


def other_host_line() -> str:
    public = other_key().export_public_key().decode().strip()
    return f"[{SFTP_HOST}]:{SFTP_PORT} {public}"


def new_dir() -> str:
    return f"t-{RUN}-{uuid.uuid4().hex[:8]}"


def host_port(endpoint: str | None) -> tuple[str, int]:
    """The server, or the loopback proxy the contract names by an http:// URL."""
    if endpoint is None:
        return SFTP_HOST, SFTP_PORT
    url = urlsplit(endpoint)
    return url.hostname or SFTP_HOST, url.port or SFTP_PORT


def sftp_storage(directory: str, endpoint: str | None = None, **login: Any) -> SftpStorage:
    host, port = host_port(endpoint)
    if "password" not in login and "private_key" not in login:
        login["private_key"] = private_key()
    login.setdefault("known_host", known_host())
    return SftpStorage(host, login.pop("user", SFTP_USER), port=port, directory=directory,
                       **login)


def sftp_target(name: str, endpoint: str | None = None, directory: str | None = None,
                **fields: Any) -> dict[str, Any]:
    host, port = host_port(endpoint)
    target = {"name": name, "kind": "sftp", "sftp_host": host, "sftp_port": port,
              "sftp_user": SFTP_USER, "sftp_known_host": known_host(),
              "sftp_dir": directory or new_dir()}
    if "sftp_password" not in fields:
        target["sftp_private_key"] = private_key()
    return {**target, **fields}


WRONG_PASSWORD = "not-the-password-" + uuid.uuid4().hex


def sftp_kind() -> StoreKind:
    directory = new_dir()

    def make(endpoint: str | None) -> Storage:
        return sftp_storage(directory, endpoint)

    def target(name: str, endpoint: str | None) -> dict[str, Any]:
        return sftp_target(name, endpoint, directory)

    async def pending(storage: Storage) -> list[str]:
        assert isinstance(storage, SftpStorage)
        return await storage.pending_uploads()

    def wrong() -> Storage:
        return sftp_storage(directory, password=WRONG_PASSWORD)

    return StoreKind(name="sftp", make=make, upstream_port=SFTP_PORT, part_size=WRITE_BATCH,
                     target=target, wrong_credentials=wrong, wrong_secret=WRONG_PASSWORD,
                     pending=pending)
