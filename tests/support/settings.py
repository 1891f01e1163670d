"""Addresses of the local services, the run's names and keys, and test Settings.

The services come from scripts/services (`make test` starts them and exports
their addresses as BACKVAULT_* variables).
"""

import os
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyrage
from pydantic import SecretStr

from app.config import Settings

MONGO_URI = os.environ.get("BACKVAULT_MONGO_URI", "mongodb://127.0.0.1:57017/")
PG_URI = os.environ.get("BACKVAULT_PG_URI",
                        "postgresql://backvault:backvault@127.0.0.1:55432/postgres")
PG_BIN = os.environ.get("BACKVAULT_PG_BIN", "/usr/lib/postgresql/15/bin")
IPFS_API = os.environ.get("BACKVAULT_IPFS_API", "http://127.0.0.1:55001")
IPFS_GATEWAY = os.environ.get("BACKVAULT_IPFS_GATEWAY", "http://127.0.0.1:58080")
S3_ENDPOINT = os.environ.get("BACKVAULT_S3_ENDPOINT", "http://127.0.0.1:59000")
S3_ACCESS = os.environ.get("BACKVAULT_S3_ACCESS_KEY", "backvault")
S3_SECRET = os.environ.get("BACKVAULT_S3_SECRET_KEY", "backvault-secret")
TOOLS_BIN = Path(os.environ.get("BACKVAULT_TOOLS_BIN", Path(__file__).parents[2] / ".data/bin"))
JWT_SECRET = "test-jwt-secret-" + "x" * 32
# Every database and work file of this run carries RUN, so the end of the run finds them.
RUN = uuid.uuid4().hex[:8]
PG_DB = f"bv_src_{RUN}"
MONGO_DB = f"bv_src_{RUN}"
WORK = Path(tempfile.mkdtemp(prefix="backvault-tests-"))
AGE_IDENTITY = pyrage.x25519.Identity.generate()
AGE_KEY_FILE = WORK / "age-key.txt"
AGE_KEY_FILE.write_text(f"# test identity\n{AGE_IDENTITY}\n")
AGE_RECIPIENT = str(AGE_IDENTITY.to_public())
# Seals the URIs of sources added at runtime.
SOURCE_STORE_KEY = SecretStr(str(pyrage.x25519.Identity.generate()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


GAIA_HUB = f"http://127.0.0.1:{_free_port()}"  # served by the gaia_hub fixture
# Content items the app reads from a collection of its own catalog database.
CONTENT_SOURCES = [
    {"name": "ipfs-files", "kind": "mongo_query", "type": "ipfs", "mongo_source": "catalog",
     "collection": "app_files", "field": "cid"},
    {"name": "gaia-files", "kind": "mongo_query", "type": "gaia", "mongo_source": "catalog",
     "collection": "app_files", "field": "gaia"},
]


def pg_uri(database: str) -> str:
    """The test server's URI for another database."""
    return PG_URI.rsplit("/", 1)[0] + "/" + database


def make_settings(**groups: Any) -> Settings:
    """Settings for tests, built from arguments only (no .env, no BACKUP_* from the shell)."""
    base: dict[str, Any] = {
        # Schedules off: the seeded defaults must not fire in the middle of a test run.
        "system": {"environment": "test", "log_level": "warning", "enabled": False},
        # Some schedule tests fire every second or two.
        "schedules": {"allow_sub_minute": True},
        "catalog": {"mongo_uri": SecretStr(MONGO_URI),
                    "database": f"backvault_test_{uuid.uuid4().hex[:10]}"},
        "auth": {"jwt_secret": SecretStr(JWT_SECRET), "bootstrap_username": "root",
                 "bootstrap_password": SecretStr("root-password-for-tests")},
        "storage": {"local_dir": str(WORK / "store"), "spool_dir": str(WORK / "spool")},
        "sources": [{"name": "pg", "kind": "postgres", "uri": pg_uri(PG_DB)},
                    {"name": "mongo", "kind": "mongodb", "uri": MONGO_URI + MONGO_DB}],
        "tools": {"pg_bin_dir": PG_BIN},
        "encryption": {"recipients": [AGE_RECIPIENT], "identity_file": str(AGE_KEY_FILE)},
        "source_store": {"key": SOURCE_STORE_KEY},
        "content": {"ipfs_gateways": [IPFS_GATEWAY], "kubo_api": IPFS_API, "retries": 1,
                    "gaia_hubs": [GAIA_HUB], "sources": CONTENT_SOURCES},
    }
    base.update(groups)
    return Settings(_env_file=None, **base)
