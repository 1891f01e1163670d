"""Artifact names and the manifest beside each artifact.

`<source>/<YYYY>/<MM>/<DD>/<backup-id>.<format chain>` and `<backup-id>.manifest.json`
beside it. The manifest says everything needed to restore without Backvault.
"""

import json
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.config import Settings, SourceKind
from app.models.backup import Backup
from app.services.artifacts.compress import SUFFIX
from app.services.databases.kinds import kind_of, kind_of_format

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ArtifactPlan:
    format_chain: list[str]
    key: str
    manifest_key: str
    recipients: list[str]

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients)


def stored_fields(backup: Backup) -> dict[str, Any]:
    """Where and how the artifact is stored: every manifest (dump or base backup) says."""
    return {"storageKey": backup.storage_key,
            "storageTarget": backup.storage_target or backup.storage_backend,
            "formatChain": backup.format_chain, "sha256": backup.sha256,
            "storedBytes": backup.stored_bytes, "plaintextBytes": backup.plaintext_bytes,
            "encrypted": backup.encrypted, "recipients": backup.recipients}


def format_chain(settings: Settings, base: str) -> list[str]:
    """The stored format: base, then the compression suffix, then age if encrypting."""
    suffix = SUFFIX[settings.compression.algorithm]
    return [base] + ([suffix] if suffix else []) + (["age"] if settings.encryption.enabled
                                                     else [])


def plan_artifact(settings: Settings, source: str, kind: SourceKind, backup_id: str,
                  created: datetime) -> ArtifactPlan:
    chain = format_chain(settings, kind_of(kind).format_name)
    recipients = list(settings.encryption.recipients)
    folder = f"{source}/{created:%Y/%m/%d}"
    return ArtifactPlan(chain, f"{folder}/{backup_id}.{'.'.join(chain)}",
                        f"{folder}/{backup_id}.manifest.json", recipients)


RESTORE_NOTE = ("Restores into a NEW database: replace HOST, PORT and USER with the server's "
                "connection details, NEW_DB with a database name that does not exist yet, "
                "and key.txt with the age identity file. The tools ask for the password "
                "(or read PGPASSWORD / ~/.pgpass): never put it on the command line.")


def restore_command(chain: list[str], filename: str, database: str) -> str:
    """The stock-tool pipeline that restores this artifact into a new database, never into
    the live one it came from (`database` is the name inside the artifact)."""
    name = shlex.quote(filename)
    steps = []
    if "age" in chain:
        steps.append(f"age -d -i key.txt {name}")
    reader = {"zst": "zstd -d -c", "gz": "gzip -d -c"}
    compression = next((c for c in chain if c in reader), None)
    if compression:
        steps.append(reader[compression] + ("" if steps else f" {name}"))
    return kind_of_format(chain[0]).restore_command(steps, filename, database)


def build_manifest(backup: Backup, database: str) -> dict[str, Any]:
    """The manifest of a completed backup; `database` is the database the artifact holds."""
    filename = (backup.storage_key or "").rsplit("/", 1)[-1]
    return {
        "manifestVersion": MANIFEST_VERSION,
        "id": str(backup.id),
        "source": backup.source,
        "kind": backup.kind.value if backup.kind else None,
        "database": database,
        "safetyFor": str(backup.safety_for) if backup.safety_for else None,
        "type": backup.type.value,
        "admin": str(backup.admin) if backup.admin else None,
        "createdAt": backup.created_at.isoformat(),
        "completedAt": backup.updated_at.isoformat(),
        "durationMs": backup.duration_ms,
        "retentionDays": backup.retention_days,
        "notes": backup.notes,
        **stored_fields(backup),
        "serverVersion": backup.server_version,
        "toolVersion": backup.tool_version,
        "options": backup.options,
        "contents": [c.model_dump(by_alias=True) for c in backup.contents],
        # A partial dump (some tables unreadable) says so after a catalog rebuild too.
        "error": backup.error,
        "restoreCommand": restore_command(backup.format_chain, filename, database),
        "restoreNote": RESTORE_NOTE,
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n"
