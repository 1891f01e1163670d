"""The manifest beside a base backup: how to restore it, and its WAL, with stock tools."""

import shlex
from typing import Any

from app.config import Settings
from app.models.backup import Backup
from app.services.databases.manifest import MANIFEST_VERSION, stored_fields

RESTORE_NOTE = (
    "Copy the base backup and the source's WAL objects (storage prefix wal/<source>/) to "
    "WALDIR and the age identity to key.txt (absolute paths in restore_command: it runs in "
    "the data directory), then run the steps in order as the OS user that "
    "runs PostgreSQL. Add recovery_target_time = '...' to postgresql.auto.conf to stop at a "
    "moment (default: replay all archived WAL); PORT is a free port.")


def wal_restore_command(chain: list[str], wal_dir: str = "WALDIR",
                        key: str = "key.txt") -> str:
    """A `restore_command` that fetches one archived WAL file with stock tools (the whole
    segment, else the partial copy of the segment being received)."""
    suffix = "".join(f".{s}" for s in chain[1:])
    steps = []
    if "age" in chain:
        steps.append(f"age -d -i {key} \"$f\"")
    if "zst" in chain:
        steps.append("zstd -d -q -c" + ("" if steps else " \"$f\""))
    elif "gz" in chain:
        steps.append("gzip -d -c" + ("" if steps else " \"$f\""))
    reader = " | ".join(steps) or "cat \"$f\""
    script = (f"f={wal_dir}/%f{suffix}; [ -f \"$f\" ] || f={wal_dir}/%f.partial{suffix}; "
              f"[ -f \"$f\" ] && {reader} > \"%p\"")
    return f"bash -o pipefail -c {shlex.quote(script)}"


def restore_steps(backup: Backup) -> list[str]:
    filename = shlex.quote((backup.storage_key or "").rsplit("/", 1)[-1])
    chain = backup.format_chain
    reader = []
    if "age" in chain:
        reader.append(f"age -d -i key.txt {filename}")
    if "zst" in chain:
        reader.append("zstd -d -c" + ("" if reader else f" {filename}"))
    elif "gz" in chain:
        reader.append("gzip -d -c" + ("" if reader else f" {filename}"))
    extract = " | ".join(reader) + " | tar -x -C DATA" if reader else \
        f"tar -x -C DATA -f {filename}"
    command = wal_restore_command(chain)
    # hot_standby off: recovery then needs no setting (max_connections...) >= the primary's.
    conf = (f"restore_command = '{command.replace(chr(39), chr(39) * 2)}'\n"
            "recovery_target_action = 'promote'\nhot_standby = off\n")
    return [
        "mkdir -m 700 DATA",
        extract,
        f"printf '%s' {shlex.quote(conf)} >> DATA/postgresql.auto.conf",
        "touch DATA/recovery.signal",
        "pg_ctl -D DATA -l restore.log -o '-p PORT' -w start",
    ]


def base_manifest(backup: Backup, settings: Settings) -> dict[str, Any]:
    """The manifest of a completed base backup."""
    steps = restore_steps(backup)
    return {
        "manifestVersion": MANIFEST_VERSION,
        "id": str(backup.id),
        "source": backup.source,
        "kind": "postgres-base",
        "database": backup.database,
        "type": backup.type.value,
        "createdAt": backup.created_at.isoformat(),
        "completedAt": backup.updated_at.isoformat(),
        "durationMs": backup.duration_ms,
        **stored_fields(backup),
        "toolVersion": backup.tool_version,
        "pitr": backup.options.get("pitr", {}),
        "walPrefix": f"wal/{backup.source}/",
        "restoreSteps": steps,
        "restoreCommand": " && ".join(steps),
        "walRestoreCommand": wal_restore_command(backup.format_chain),
        "restoreNote": RESTORE_NOTE,
    }
