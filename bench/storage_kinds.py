"""The `backvault_pg_azure` and `backvault_pg_gcs` rows of `make bench`: the PostgreSQL
backup to Azurite (block blobs) and to fake-gcs-server (resumable upload), each as the
default named target, secrets in the environment. Each kind is one `KindBench`; another
kind adds one the same way.

`python -m bench.storage_kinds` runs only these rows (BENCH_GB, BENCH_REPEAT as for
`make bench`), on the same generated database.
"""

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Row

AZURE_URL = os.environ.get("BACKVAULT_AZURE_ACCOUNT_URL",
                           "http://127.0.0.1:50110/devstoreaccount1")
# Azurite's fixed development key (public, documented by Microsoft).
AZURE_KEY = os.environ.get(
    "BACKVAULT_AZURE_ACCOUNT_KEY",
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
GCS_ENDPOINT = os.environ.get("BACKVAULT_GCS_ENDPOINT", "http://127.0.0.1:50120")

Backvault = Callable[[dict[str, str], str, str, str], "Row"]


@dataclass(frozen=True)
class KindBench:
    row: str
    target: Callable[[str], dict[str, Any]]  # the target settings, under a fresh prefix
    note: str


def azure_target(prefix: str) -> dict[str, Any]:
    return {"name": "bench-azure", "kind": "azure", "azure_account_url": AZURE_URL,
            "azure_container": "bench", "azure_account_key": AZURE_KEY,
            "azure_prefix": prefix}


def gcs_target(prefix: str) -> dict[str, Any]:
    # fake-gcs-server has no auth: no credentials, its endpoint instead.
    return {"name": "bench-gcs", "kind": "gcs", "gcs_bucket": "bench",
            "gcs_endpoint_url": GCS_ENDPOINT, "gcs_prefix": prefix}


KINDS = [
    KindBench("backvault_pg_azure", azure_target,
              "zstd {level} + age + SHA-256 to Azurite, staged blocks + block list"),
    KindBench("backvault_pg_gcs", gcs_target,
              "zstd {level} + age + SHA-256 to fake-gcs-server, resumable upload"),
]


def kind_env(base_env: dict[str, str], target: dict[str, Any]) -> dict[str, str]:
    """The bench environment with this target as the default (secrets in the environment,
    never in arguments)."""
    return {**base_env, "BACKUP_STORAGE__TARGETS": json.dumps([target]),
            "BACKUP_STORAGE__DEFAULT_TARGET": target["name"]}


async def remove_stored(target: dict[str, Any]) -> None:
    """Delete what the runs stored, through the storage kind itself."""
    from app.config import Settings, StorageTargetSettings
    from app.services.storage.targets import build_target

    settings = Settings(_env_file=None)
    storage = build_target(StorageTargetSettings.model_validate(target), settings)
    async with aclosing(storage.list_objects("")) as listing:
        keys = [info.key async for info in listing]
    for key in keys:
        await storage.delete(key)


def storage_kind_rows(backvault: Backvault, base_env: dict[str, str],
                      level: int) -> list["Row"]:
    rows = []
    for kind in KINDS:
        target = kind.target(f"bench-{uuid.uuid4().hex[:8]}")
        env = kind_env(base_env, target)
        try:
            rows.append(backvault(env, "bench-pg", kind.row, kind.note.format(level=level)))
        finally:
            saved = {k: os.environ.get(k) for k in env if k.startswith("BACKUP_")}
            os.environ.update(env)  # Settings() reads the limits and retries from here
            try:
                asyncio.run(remove_stored(target))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    return rows


def main() -> None:
    """Only the storage-kind rows (Azure, GCS, SFTP), with the local row beside them for
    the ratio; written to bench/results/storage_kinds.json and .md."""
    import tempfile
    from dataclasses import asdict
    from pathlib import Path

    import pyrage

    from app.config import DEFAULT_LEVEL, CompressionAlgorithm
    from bench import run
    from bench.generate import generate_postgres
    from bench.sftp_row import sftp_row

    gb = float(os.environ.get("BENCH_GB", "1"))
    database = f"bench_{str(gb).replace('.', '_')}gb"
    asyncio.run(generate_postgres(run.PG_URI, database, int(gb * 2**30)))
    work = Path(tempfile.mkdtemp(prefix="backvault-bench-kinds-"))
    key = pyrage.x25519.Identity.generate()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    base_env.update({
        "BACKUP_CATALOG__MONGO_URI": run.MONGO_URI,
        "BACKUP_CATALOG__DATABASE": "bench_catalog",
        "BACKUP_SOURCES": json.dumps([{"name": "bench-pg", "kind": "postgres",
                                       "uri": run.PG_URI.rsplit("/", 1)[0] + "/" + database}]),
        "BACKUP_TOOLS__PG_BIN_DIR": str(run.PG_BIN),
        "BACKUP_STORAGE__LOCAL_DIR": str(work / "store"),
        "BACKUP_ENCRYPTION__RECIPIENTS": json.dumps([str(key.to_public())]),
        "BACKUP_LIMITS__MAX_SIZE_MB": str(int(gb * 1024 * 2) + 1024),
        "BACKUP_SYSTEM__LOG_LEVEL": "warning",
    })
    level = DEFAULT_LEVEL[CompressionAlgorithm.zstd]
    try:
        rows = [run.backvault(base_env, "bench-pg", "backvault_pg_local", "local disk")]
        rows += storage_kind_rows(run.backvault, base_env, level)
        rows.append(sftp_row(run.backvault, base_env, level))
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    local = rows[0].wall_s
    lines = [f"{row.name:22} {row.wall_s:8.2f} s  {row.wall_s / local:5.2f}x local  "
             f"peak RSS {row.peak_rss_mb:6.1f} MB  {row.stored_bytes / 2**20:8.1f} MiB stored"
             for row in rows]
    for line in lines:
        run.say(line)
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    data = [{**asdict(r), "x_local": round(r.wall_s / local, 3)} for r in rows]
    (run.RESULTS / "storage_kinds.json").write_text(json.dumps(data, indent=2) + "\n")
    (run.RESULTS / "storage_kinds.md").write_text(
        f"BENCH_GB={gb} BENCH_REPEAT={run.REPEAT} python -m bench.storage_kinds\n\n"
        + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
