"""Restore rows of `make bench` (issue 13 point 6), on the data and backups run.py made.

Stock tools restore from an uncompressed local file (`pg_restore -j 2` from a custom-format
dump, `mongorestore --archive`); Backvault restores its newest backup of the same data
(zstd + age) from local disk and from MinIO, through `backvault restore`. Each restore goes
into a new database, dropped afterwards. wall_s of a Backvault row is the job's own time
(claim to finish); process_wall_s adds interpreter start-up and catalog connection.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyrage

from app.services.databases.postgres.source import Connection
from bench.run import (
    MONGO_URI,
    NEUTRAL_DIR,
    PG_BIN,
    PG_URI,
    REPEAT,
    TOOLS,
    Row,
    measure_once,
    median,
    say,
)

NEWEST = """
import asyncio, json, sys
from app.config import get_settings
from app.services.catalog.db import open_catalog
from app.models.backup import Backup
from app.models.job import BackupJob
async def main():
    client = await open_catalog(get_settings())
    what, value, backend = sys.argv[1], sys.argv[2], sys.argv[3]
    if what == "backup":
        found = await Backup.find({"source": value, "status": "completed",
                                   "storageBackend": backend}).sort(
            [("createdAt", -1)]).limit(1).to_list()
        b = found[0]
        print(json.dumps({"id": str(b.id), "plaintextBytes": b.plaintext_bytes,
                          "storedBytes": b.stored_bytes}))
    else:
        j = (await BackupJob.find({"kind": "restore"}).sort(
            [("createdAt", -1)]).limit(1).to_list())[0]
        print(json.dumps({"status": j.status.value, "error": j.error,
                          "seconds": (j.finished_at - j.started_at).total_seconds()}))
    await client.close()
asyncio.run(main())
"""


def _catalog(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", NEWEST, *args], env=env, capture_output=True,
                          text=True, check=True, cwd=NEUTRAL_DIR)
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _uri(database: str) -> str:
    """The server's URI for a database, without the password (PGPASSWORD carries it)."""
    return Connection.parse(PG_URI, database).uri


def _psql(pg_env: dict[str, str], sql: str) -> None:
    subprocess.run([str(PG_BIN / "psql"), "--no-password", "-q", "-d", _uri("postgres"),
                    "-c", sql], env=pg_env, check=True, capture_output=True, cwd=NEUTRAL_DIR)


def _drop_mongo(database: str) -> None:
    subprocess.run([sys.executable, "-c",
                    "import sys; from pymongo import MongoClient; "
                    "MongoClient(sys.argv[1]).drop_database(sys.argv[2])", MONGO_URI, database],
                   check=True, cwd=NEUTRAL_DIR)


def backvault_restore(env: dict[str, str], source: str, backend: str, target: str,
                      name: str, note: str, drop: Any) -> Row:
    """`backvault restore` of the source's newest backup on `backend` into a new database,
    REPEAT times (dropped after each)."""
    backup = _catalog(env, "backup", source, backend)
    cli = str(Path(sys.executable).parent / "backvault")
    jobs, walls, peaks = [], [], []
    for _ in range(REPEAT):
        wall, rss, _ = measure_once([cli, "restore", backup["id"], "--target-database", target,
                                     "--no-safety-backup"], env=env, stdout=subprocess.PIPE)
        job = _catalog(env, "job", "", "")
        if job["status"] != "completed":
            raise SystemExit(f"{name}: restore {job['status']}: {job['error']}")
        jobs.append(job["seconds"])
        walls.append(wall)
        peaks.append(rss)
        drop(target)
    return Row(name, median(jobs), backup["plaintextBytes"], backup["storedBytes"], max(peaks),
               process_wall_s=round(median(walls), 3), note=note)


def stock(command: list[str], env: dict[str, str] | None, size: int, name: str, note: str,
          before: Any, after: Any) -> Row:
    walls, peaks = [], []
    for _ in range(REPEAT):
        before()
        wall, rss, _ = measure_once(command, env=env)
        walls.append(wall)
        peaks.append(rss)
        after()
    return Row(name, median(walls), size, size, max(peaks), note=note)


def restore_rows(base_env: dict[str, str], s3_env: dict[str, str],
                 key: pyrage.x25519.Identity, pg_env: dict[str, str], pg_args: list[str],
                 mongo_db: str, work: Path) -> list[Row]:
    """The five restore rows; run.py's backups of bench-pg and bench-mongo must exist."""
    identity = work / "age-key.txt"
    identity.write_text(f"{key}\n")
    local = {**base_env, "BACKUP_ENCRYPTION__IDENTITY_FILE": str(identity),
             "BACKUP_STORAGE__SPOOL_DIR": str(work / "spool")}
    s3 = {**s3_env, **{k: v for k, v in local.items() if k.startswith("BACKUP_ENCRYPTION")},
          "BACKUP_STORAGE__SPOOL_DIR": str(work / "spool")}
    target = "bench_restored"

    def drop_pg(name: str = target) -> None:
        _psql(pg_env, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    drop_pg()
    say("restores: stock pg_restore -j 2 from an uncompressed custom-format file...")
    dump = work / "restore.pgdump"
    subprocess.run(["bash", "-c", " ".join(pg_args) + f" > {dump}"], env=pg_env, check=True)
    rows = [stock([str(PG_BIN / "pg_restore"), "-j", "2", "--no-owner", "--no-password",
                   "-d", _uri(target), str(dump)], pg_env, dump.stat().st_size,
                  "pg_restore_stock", "pg_restore -j 2 from an uncompressed -Fc file",
                  lambda: _psql(pg_env, f'CREATE DATABASE "{target}"'), drop_pg)]
    dump.unlink()
    say("restores: Backvault PostgreSQL from local disk and from MinIO...")
    rows.append(backvault_restore(local, "bench-pg", "local", target,
                                  "backvault_pg_restore_local",
                                  "age + zstd from local disk, SHA-256 checked, pg_restore -j",
                                  drop_pg))
    rows.append(backvault_restore(s3, "bench-pg", "s3", target, "backvault_pg_restore_s3",
                                  "age + zstd from MinIO, SHA-256 checked, pg_restore -j",
                                  drop_pg))
    say("restores: stock mongorestore --archive and Backvault MongoDB...")
    archive = work / "restore.archive"
    subprocess.run([str(TOOLS / "mongodump"), f"--uri={MONGO_URI}{mongo_db}",
                    f"--archive={archive}", "--quiet"], check=True, cwd=NEUTRAL_DIR)
    _drop_mongo(target)
    rows.append(stock([str(TOOLS / "mongorestore"), f"--uri={MONGO_URI}",
                       f"--archive={archive}", f"--nsFrom={mongo_db}.*",
                       f"--nsTo={target}.*", "--quiet"], None, archive.stat().st_size,
                      "mongorestore_stock", "mongorestore --archive from an uncompressed file",
                      lambda: None, lambda: _drop_mongo(target)))
    archive.unlink()
    rows.append(backvault_restore(local, "bench-mongo", "local", target,
                                  "backvault_mongo_restore_local",
                                  "age + zstd from local disk, own archive reader",
                                  _drop_mongo))
    summarize(rows)
    return rows


def summarize(rows: list[Row]) -> None:
    """The restore goals: local within 1.2x of pg_restore, MinIO within 1.3x, RSS < 200 MB."""
    by = {r.name: r for r in rows}
    stock_pg, stock_mongo = by["pg_restore_stock"].wall_s, by["mongorestore_stock"].wall_s
    say(f"- restore from local disk vs pg_restore -j 2: "
        f"{by['backvault_pg_restore_local'].wall_s / stock_pg:.2f}x the time (goal <= 1.2x)")
    say(f"- restore from MinIO vs pg_restore -j 2: "
        f"{by['backvault_pg_restore_s3'].wall_s / stock_pg:.2f}x the time (goal <= 1.3x)")
    say(f"- MongoDB restore vs mongorestore --archive: "
        f"{by['backvault_mongo_restore_local'].wall_s / stock_mongo:.2f}x the time")
    say(f"- peak RSS of Backvault restores: "
        f"{max(r.peak_rss_mb for r in rows if 'backvault' in r.name):.0f} MB (goal < 200 MB)")
