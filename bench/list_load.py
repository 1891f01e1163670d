"""`make bench-list`: 200 concurrent catalog list requests against the real server while
`/healthz` is polled every 50 ms. Prints a table and writes bench/results/list_load.{json,md}.

A fresh catalog database gets BENCH_BACKUPS (10,000) backups and BENCH_JOBS (100,000) jobs;
`backvault serve` runs on a free loopback port with that catalog. BENCH_SERVER_DIR runs the
server from another checkout (its `app` package is imported from there), BENCH_LABEL names
the result files (list_load_<label>.*).

Careful with code before the list fix: its 200 concurrent unbounded full scans drove a
FerretDB v1 server to 23 GB and out of memory in the jobs phase (FerretDB kept scanning
after the server that asked was stopped). Run such a comparison with BENCH_CONCURRENCY
lowered, or on a FerretDB of its own.
"""

import asyncio
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId
from pymongo import AsyncMongoClient

from bench.run import RESULTS, ROOT, say

MONGO_URI = os.environ.get("BACKVAULT_MONGO_URI", "mongodb://127.0.0.1:57017/")
BACKUPS = int(os.environ.get("BENCH_BACKUPS", "10000"))
JOBS = int(os.environ.get("BENCH_JOBS", "100000"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "200"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", str(CONCURRENCY)))
SERVER_DIR = Path(os.environ.get("BENCH_SERVER_DIR", ROOT))
LABEL = os.environ.get("BENCH_LABEL", "")
REQUEST_TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "120"))
HEALTH_EVERY = 0.05
HEALTH_TIMEOUT = 5.0
PASSWORD = "bench-" + uuid.uuid4().hex
PATHS = ["/api/backups?limit=100", "/api/backups/jobs?limit=100"]
SOURCES = ["shop-pg", "billing-pg", "events-mongo", "users-mongo", "ipfs-files"]
TABLES = ["orders", "order_items", "customers", "products", "invoices", "payments",
          "shipments", "audit_log", "sessions", "inventory", "refunds", "coupons"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def oid_at(when: datetime) -> ObjectId:
    """An id made at `when`, as the server would have made it then."""
    return ObjectId(ObjectId.from_datetime(when).binary[:4] + os.urandom(8))


def backup_doc(i: int, when: datetime, job_id: ObjectId) -> dict[str, Any]:
    """A completed, verified backup as the service stores it."""
    source = SOURCES[i % len(SOURCES)]
    kind = "mongodb" if "mongo" in source else "content" if "ipfs" in source else "postgres"
    key = f"{source}/{when:%Y/%m/%d}/{source}-{when:%Y%m%dT%H%M%SZ}-{i:06d}"
    contents = [{"name": t, "count": random.randint(0, 10**6), "bytes": random.randint(0, 10**9)}
                for t in TABLES]
    stored = random.randint(10**6, 10**9)
    return {
        "_id": oid_at(when),
        "admin": ObjectId(), "type": "automatic" if i % 4 else "manual",
        "status": "failed" if i % 50 == 0 else "completed", "sizeMB": stored / 2**20,
        "retentionDays": 30, "notes": f"Scheduled backup (nightly-{source})", "restoredAt": None,
        "createdAt": when, "updatedAt": when + timedelta(minutes=3), "source": source,
        "kind": kind, "jobId": job_id, "storageBackend": "local",
        "storageKey": key + ".dump.zst.age", "manifestKey": key + ".manifest.json",
        "formatChain": ["pg_dump-custom" if kind == "postgres" else "mongodump-archive",
                        "zstd", "age"],
        "sha256": os.urandom(32).hex(), "storedBytes": stored, "plaintextBytes": stored * 4,
        "durationMs": random.randint(1000, 600_000), "serverVersion": "16.4",
        "toolVersion": "pg_dump (PostgreSQL) 16.4", "contents": contents, "encrypted": True,
        "recipients": ["age1" + os.urandom(29).hex()[:58]],
        "options": {"compression": "zstd", "level": 2, "excludeTables": []},
        "verification": {"state": "passed", "checkedAt": when + timedelta(hours=1),
                         "deep": i % 7 == 0, "sha256Ok": True, "sizeOk": True,
                         "contents": contents if i % 7 == 0 else [], "error": None},
        "error": "pg_dump exited with status 1: connection refused" if i % 50 == 0 else None,
        "database": source.split("-")[0], "safetyFor": None,
        "deletingSince": None, "deletionReason": None,
    }


def job_doc(i: int, when: datetime, backup_id: ObjectId | None) -> dict[str, Any]:
    """A finished job (mostly database backups and verifies) as the service stores it."""
    kind = ["database", "verify", "content", "health_check", "cleanup"][i % 5]
    source = SOURCES[i % len(SOURCES)]
    status = "failed" if i % 40 == 0 else "completed"
    return {
        "_id": oid_at(when),
        "kind": kind, "trigger": "schedule" if i % 3 else "api", "status": status,
        "source": source, "backupId": backup_id, "scheduleId": ObjectId(), "fireId": ObjectId(),
        "requestedBy": None, "retryOf": None, "retryJobId": None,
        "params": {"fireTime": when.isoformat(), "backupType": "automatic",
                   "request": {"source": source, "retentionDays": None,
                               "notes": f"Scheduled backup ({source})"}},
        "progress": {"phase": "done", "bytesRead": 123_456_789, "bytesWritten": 23_456_789,
                     "itemsDone": 12, "itemsTotal": 12, "message": None},
        "result": {"backupId": str(backup_id) if backup_id else None,
                   "storedBytes": 23_456_789, "sha256": os.urandom(32).hex()},
        "error": "pg_dump exited with status 1" if status == "failed" else None,
        "attempts": 1, "maxAttempts": 3, "createdAt": when, "updatedAt": when,
        "startedAt": when, "finishedAt": when + timedelta(seconds=random.randint(1, 600)),
        "leaseOwner": "backvault-1:4242", "leaseExpiresAt": None, "heartbeatAt": when,
    }


async def fill_catalog(database: str) -> None:
    """BACKUPS backups and JOBS jobs spread over the last 90 days, oldest first."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI, tz_aware=True)
    db = client[database]
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=90)
    backup_ids: list[ObjectId] = []
    batch: list[dict[str, Any]] = []
    for i in range(BACKUPS):
        when = start + timedelta(seconds=90 * 86400 * i / BACKUPS)
        batch.append(backup_doc(i, when, ObjectId()))
        backup_ids.append(batch[-1]["_id"])
        if len(batch) == 1000:
            await db.backups.insert_many(batch)
            batch = []
    if batch:
        await db.backups.insert_many(batch)
    batch = []
    for i in range(JOBS):
        when = start + timedelta(seconds=90 * 86400 * i / JOBS)
        backup = backup_ids[i * BACKUPS // JOBS] if i % 10 == 0 and backup_ids else None
        batch.append(job_doc(i, when, backup))
        if len(batch) == 2000:
            await db.backup_jobs.insert_many(batch)
            batch = []
    if batch:
        await db.backup_jobs.insert_many(batch)
    await client.close()


def server_env(database: str, port: int, store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    env.update({
        "BACKUP_SYSTEM__ENABLED": "false", "BACKUP_SYSTEM__ENVIRONMENT": "test",
        "BACKUP_SYSTEM__LOG_LEVEL": "warning", "BACKUP_SYSTEM__HOST": "127.0.0.1",
        "BACKUP_SYSTEM__PORT": str(port),
        "BACKUP_CATALOG__MONGO_URI": MONGO_URI, "BACKUP_CATALOG__DATABASE": database,
        "BACKUP_CATALOG__SOURCE_NAME": "", "BACKUP_SOURCES": "[]",
        "BACKUP_STORAGE__BACKEND": "local", "BACKUP_STORAGE__LOCAL_DIR": str(store),
        "BACKUP_AUTH__JWT_SECRET": "bench-jwt-secret-" + uuid.uuid4().hex,
        "BACKUP_AUTH__BOOTSTRAP_USERNAME": "bench", "BACKUP_AUTH__BOOTSTRAP_PASSWORD": PASSWORD,
        "BACKUP_CONTENT__ENABLED": "false",
        # The server's own checkout first: the venv's editable install points at this one.
        "PYTHONPATH": str(SERVER_DIR),
    })
    return env


def start_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-c", "from app.cli import main; main()", "serve"],
            cwd=SERVER_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server did not answer within 120 s:\n{log.read_text()[-3000:]}")


def poll_health(base: str, stop: Any, out: Connection) -> None:
    """In its own process (the load's parsing would delay it here): GET /healthz every 50 ms."""
    samples: list[tuple[float, str]] = []
    with httpx.Client(timeout=HEALTH_TIMEOUT) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = str(client.get(f"{base}/healthz").status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            elapsed = time.monotonic() - started
            samples.append((elapsed, status))
            time.sleep(max(0.0, HEALTH_EVERY - elapsed))
    out.send(samples)


async def fire(base: str, path: str, token: str, total: int) -> list[tuple[float, str]]:
    """REQUESTS requests, CONCURRENCY at a time; (seconds, status) of each."""
    checked = False
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def one() -> tuple[float, str]:
            nonlocal checked
            async with gate:
                started = time.monotonic()
                try:
                    response = await client.get(path)
                    status = str(response.status_code)
                    if status == "200" and not checked:
                        checked = True
                        check_shape(path, response.content, total)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                return time.monotonic() - started, status

        return await asyncio.gather(*(one() for _ in range(REQUESTS)))


def summary(samples: list[tuple[float, str]]) -> dict[str, Any]:
    times = sorted(t for t, _ in samples)
    bad: dict[str, int] = {}
    for _, status in samples:
        if status != "200":
            bad[status] = bad.get(status, 0) + 1
    if not times:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "max_ms": None, "non_200": bad}
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    return {"count": len(times), "p50_ms": round(statistics.median(times) * 1000, 1),
            "p95_ms": round(p95 * 1000, 1), "max_ms": round(times[-1] * 1000, 1),
            "non_200": bad}


def measure(base: str, path: str, token: str, total: int) -> dict[str, Any]:
    """One load phase with the health poller running alongside."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receive, send = context.Pipe(duplex=False)
    poller = context.Process(target=poll_health, args=(base, stop, send))
    poller.start()
    time.sleep(0.5)  # a few polls before the load starts
    started = time.monotonic()
    samples = asyncio.run(fire(base, path, token, total))
    wall = time.monotonic() - started
    time.sleep(0.5)
    stop.set()
    health = receive.recv()
    poller.join(30)
    return {"path": path, "wall_s": round(wall, 2), "list": summary(samples),
            "healthz": summary(health)}


def check_shape(path: str, body: bytes, total: int) -> None:
    """A timed answer is the page the API promises."""
    page = json.loads(body)
    if page.get("total") != total or len(page.get("items", [])) != min(100, total):
        raise SystemExit(f"GET {path} answered an unexpected page: {str(page)[:500]}")


def report(rows: list[dict[str, Any]]) -> None:
    head = ("| request | wall s | list p50 ms | p95 ms | max ms | list non-200 "
            "| /healthz p50 ms | p95 ms | max ms | /healthz non-200 (of polls) |")
    lines = [f"# Catalog list under load ({LABEL or 'current code'})", "",
             f"{BACKUPS:,} backups, {JOBS:,} jobs; {REQUESTS} requests, {CONCURRENCY} at a "
             f"time; /healthz polled every {int(HEALTH_EVERY * 1000)} ms from another process.",
             "", head, "|" + "---|" * 10]
    for row in rows:
        li, he = row["list"], row["healthz"]
        lines.append(f"| GET {row['path']} | {row['wall_s']} | {li['p50_ms']} | {li['p95_ms']} "
                     f"| {li['max_ms']} | {li['non_200'] or '-'} | {he['p50_ms']} "
                     f"| {he['p95_ms']} | {he['max_ms']} | {he['non_200'] or '-'} "
                     f"({he['count']}) |")
    text = "\n".join(lines) + "\n"
    say("\n" + text)
    name = f"list_load_{LABEL}" if LABEL else "list_load"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"label": LABEL or "current", "backups": BACKUPS, "jobs": JOBS,
         "requests": REQUESTS, "concurrency": CONCURRENCY,
         "measured_at": datetime.now(UTC).isoformat(), "rows": rows}, indent=2) + "\n")


def main() -> None:
    database = f"bench_list_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="bench-list-"))
    say(f"filling {database}: {BACKUPS:,} backups, {JOBS:,} jobs")
    started = time.monotonic()
    rows = []
    try:
        asyncio.run(fill_catalog(database))
        say(f"filled in {time.monotonic() - started:.0f} s; the server runs from {SERVER_DIR}")
        for path, total in zip(PATHS, [BACKUPS, JOBS], strict=True):
            # A fresh server per request kind: work the last one left behind ends with it.
            rows.append(run_phase(database, work, path, total))
            report(rows)  # after each phase: a run cut short keeps what it measured
    finally:
        asyncio.run(drop(database))
        shutil.rmtree(work, ignore_errors=True)


def run_phase(database: str, work: Path, path: str, total: int) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / f"server-{port}.log"
    server = start_server(server_env(database, port, work / "store"), log)
    try:
        wait_ready(base, server, log)
        token = httpx.post(f"{base}/api/auth/token", timeout=30,
                           json={"username": "bench", "password": PASSWORD}
                           ).json()["access_token"]
        say(f"GET {path}: {REQUESTS} requests, {CONCURRENCY} at a time")
        row = measure(base, path, token, total)
        say(json.dumps(row))
        return row
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


async def drop(database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    await client.drop_database(database)
    await client.close()


if __name__ == "__main__":
    main()
