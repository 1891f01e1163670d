"""Artifact names and the manifest beside each artifact.

`<source>/<YYYY>/<MM>/<DD>/<backup-id>.<format chain>` and `<backup-id>.manifest.json`
beside it. The manifest says everything needed to restore without Backvault.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.config import Settings, SourceKind
from app.models.backup import Backup
from app.services.pipeline.compress import SUFFIX

FORMAT_OF_KIND = {SourceKind.postgres: "pgdump", SourceKind.mongodb: "mongoarchive"}
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


def format_chain(settings: Settings, base: str) -> list[str]:
    """The stored format: base, then the compression suffix, then age if encrypting."""
    suffix = SUFFIX[settings.compression.algorithm]
    return [base] + ([suffix] if suffix else []) + (["age"] if settings.encryption.enabled
                                                     else [])


def plan_artifact(settings: Settings, source: str, kind: SourceKind, backup_id: str,
                  created: datetime) -> ArtifactPlan:
    chain = format_chain(settings, FORMAT_OF_KIND[kind])
    recipients = list(settings.encryption.recipients)
    folder = f"{source}/{created:%Y/%m/%d}"
    return ArtifactPlan(chain, f"{folder}/{backup_id}.{'.'.join(chain)}",
                        f"{folder}/{backup_id}.manifest.json", recipients)


def restore_command(chain: list[str], filename: str, database: str) -> str:
    """The stock-tool pipeline that restores this artifact."""
    steps = []
    if "age" in chain:
        steps.append(f"age -d -i key.txt {filename}")
    reader = {"zst": "zstd -d -c", "gz": "gzip -d -c"}
    compression = next((c for c in chain if c in reader), None)
    if compression:
        steps.append(reader[compression] + ("" if steps else f" {filename}"))
    if not steps:
        steps.append(f"cat {filename}")
    if chain[0] == "pgdump":
        steps.append(f"pg_restore --no-owner -d {database}")
    else:
        steps.append(f"mongorestore --archive --nsInclude='{database}.*'")
    return " | ".join(steps)


def build_manifest(backup: Backup, database: str) -> dict[str, Any]:
    filename = (backup.storage_key or "").rsplit("/", 1)[-1]
    return {
        "manifestVersion": MANIFEST_VERSION,
        "id": str(backup.id),
        "source": backup.source,
        "kind": backup.kind.value if backup.kind else None,
        "database": database,
        "type": backup.type.value,
        "admin": str(backup.admin) if backup.admin else None,
        "createdAt": backup.created_at.isoformat(),
        "completedAt": backup.updated_at.isoformat(),
        "durationMs": backup.duration_ms,
        "retentionDays": backup.retention_days,
        "notes": backup.notes,
        "storageKey": backup.storage_key,
        "formatChain": backup.format_chain,
        "sha256": backup.sha256,
        "storedBytes": backup.stored_bytes,
        "plaintextBytes": backup.plaintext_bytes,
        "encrypted": backup.encrypted,
        "recipients": backup.recipients,
        "serverVersion": backup.server_version,
        "toolVersion": backup.tool_version,
        "options": backup.options,
        "contents": [c.model_dump(by_alias=True) for c in backup.contents],
        "restoreCommand": restore_command(backup.format_chain, filename, database),
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n"
