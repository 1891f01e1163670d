"""Three real server processes on one catalog: every fire runs once; a killed replica's job
is interrupted and run again elsewhere.

Prints its figures (fires, runs, duplicates, recovery times); `pytest -s` shows them.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.support.receivers import free_port, wait_until_serving
from tests.support.settings import MONGO_URI, PG_DB, WORK, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases")

JWT = "replicas-jwt-secret-" + uuid.uuid4().hex
PASSWORD = "replicas-password-" + uuid.uuid4().hex[:8]
LEASE_SECONDS = 3
EVERY_SECONDS = 3
FIRING_FOR = 30


class Replica:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        cli = Path(sys.executable).parent / "backvault"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [str(cli), "serve", "--port", str(self.port)],
                env={**env, "BACKUP_SYSTEM__REPLICA_ID": name}, stdout=log,
                stderr=subprocess.STDOUT, cwd=log_dir)

    def wait_ready(self) -> None:
        wait_until_serving(self.base, self.proc, self.log_path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def fleet(big: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Replica],
                                                                               Any]]:
    database = f"backvault_replicas_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    sources = [{"name": "small", "kind": "postgres", "uri": pg_uri(PG_DB)},
               {"name": "big", "kind": "postgres", "uri": pg_uri(big)}]
    env.update({
        "BACKUP_SYSTEM__ENVIRONMENT": "test",
        "BACKUP_SYSTEM__LOG_LEVEL": "info",
        "BACKUP_SYSTEM__LEASE_SECONDS": str(LEASE_SECONDS),
        "BACKUP_SCHEDULES__RELOAD_SECONDS": "1",
        "BACKUP_SCHEDULES__ALLOW_SUB_MINUTE": "true",  # the test's schedule fires every 3 s
        "BACKUP_CATALOG__MONGO_URI": MONGO_URI,
        "BACKUP_CATALOG__DATABASE": database,
        "BACKUP_SOURCES": json.dumps(sources),
        "BACKUP_STORAGE__LOCAL_DIR": str(WORK / "replicas-store"),
        "BACKUP_LIMITS__MAX_CONCURRENT_JOBS": "4",
        "BACKUP_LIMITS__BANDWIDTH_MBPS": "2",  # the big backup takes several seconds
        "BACKUP_TOOLS__PG_BIN_DIR": os.environ.get("BACKVAULT_PG_BIN",
                                                   "/usr/lib/postgresql/15/bin"),
        "BACKUP_AUTH__JWT_SECRET": JWT,
        "BACKUP_AUTH__BOOTSTRAP_USERNAME": "owner",
        "BACKUP_AUTH__BOOTSTRAP_PASSWORD": PASSWORD,
    })
    log_dir = tmp_path_factory.mktemp("replicas")
    replicas = [Replica(f"replica-{i}", env, log_dir) for i in range(3)]
    mongo: MongoClient[dict[str, Any]] = MongoClient(MONGO_URI, tz_aware=True)
    try:
        for replica in replicas:
            replica.wait_ready()
        yield replicas, mongo[database]
    finally:
        for replica in replicas:
            replica.stop()
        mongo.drop_database(database)
        mongo.close()


def token(base: str) -> dict[str, str]:
    answer = httpx.post(f"{base}/api/auth/token", data={"username": "owner",
                                                        "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_every_fire_runs_once_and_a_killed_replicas_job_is_rerun(
        fleet: tuple[list[Replica], Any]) -> None:
    replicas, db = fleet
    headers = token(replicas[0].base)
    # All three seeded at once: each default schedule exists once.
    names = Counter(s["name"] for s in db.schedules.find())
    assert names == Counter(["daily", "weekly", "monthly", "cleanup", "stats-report",
                             "health-check", "restore-drill", "reverify",
                             "pitr-basebackup"])

    created = httpx.post(f"{replicas[1].base}/api/schedules", headers=headers, json={
        "name": "fast", "kind": "database", "sources": ["small"],
        "cron": f"*/{EVERY_SECONDS} * * * * *"})
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]
    time.sleep(FIRING_FOR)
    httpx.patch(f"{replicas[2].base}/api/schedules/{schedule_id}", headers=headers,
                json={"enabled": False})
    time.sleep(2)  # every replica has reloaded (1 s)

    query = {"scheduleId": ObjectId(schedule_id)}
    wait_until(lambda: db.backup_jobs.count_documents(
        {**query, "status": {"$in": ["queued", "running"]}}) == 0, 60, "scheduled jobs")
    fires = list(db.schedule_fires.find(query))
    jobs = list(db.backup_jobs.find(query))
    times = sorted(f["fireTime"] for f in fires)
    expected = int((times[-1] - times[0]).total_seconds() // EVERY_SECONDS) + 1
    per_fire = Counter(j["fireId"] for j in jobs)
    duplicates = sum(n - 1 for n in per_fire.values())
    by_replica = Counter(f["replica"] for f in fires)
    ran_on = Counter(j["leaseOwner"] for j in jobs)
    completed = sum(j["status"] == "completed" for j in jobs)
    assert all(f["status"] == "dispatched" for f in fires)
    assert duplicates == 0
    assert len(fires) == expected  # none lost between the first and the last
    assert len(fires) >= FIRING_FOR // EVERY_SECONDS - 1
    assert completed == len(jobs) == len(fires)
    backups = db.backups.count_documents({"source": "small", "status": "completed"})
    assert backups == len(fires)

    # Kill the replica running a long backup; another one must take it over.
    started = httpx.post(f"{replicas[0].base}/api/backups/database", headers=headers,
                         json={"source": "big"})
    assert started.status_code == 202, started.text
    job_id = ObjectId(started.json()["id"])
    running = wait_until(lambda: db.backup_jobs.find_one(
        {"_id": job_id, "status": "running", "progress.bytesWritten": {"$gt": 0}}), 60,
        "the big backup to start writing")
    victim = next(r for r in replicas if r.name == running["leaseOwner"])
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed_at = datetime.now().astimezone()

    interrupted = wait_until(lambda: db.backup_jobs.find_one(
        {"_id": job_id, "status": "interrupted", "retryJobId": {"$ne": None}}),
        LEASE_SECONDS * 5, "the job to be marked interrupted")
    retry = wait_until(lambda: db.backup_jobs.find_one(
        {"_id": interrupted["retryJobId"], "status": {"$in": ["completed", "failed"]}}),
        120, "the retry to finish")
    assert retry["status"] == "completed", retry
    assert retry["leaseOwner"] != victim.name
    assert retry["retryOf"] == job_id
    first_backup = db.backups.find_one({"_id": interrupted["backupId"]})
    assert first_backup["status"] == "failed"
    assert first_backup["error"].startswith("Interrupted")
    retried_backup = db.backups.find_one({"_id": ObjectId(retry["result"]["backupId"])})
    assert retried_backup["status"] == "completed"
    to_interrupted = (interrupted["finishedAt"] - killed_at).total_seconds()
    to_completed = (retry["finishedAt"] - killed_at).total_seconds()
    retry_started = (retry["startedAt"] - killed_at).total_seconds()
    assert to_interrupted < LEASE_SECONDS * 3 + 1

    figures = {
        "replicas": len(replicas), "scheduleEverySeconds": EVERY_SECONDS,
        "firingForSeconds": FIRING_FOR, "fires": len(fires), "expectedFires": expected,
        "runs": len(jobs), "completedRuns": completed, "duplicates": duplicates,
        "firesClaimedBy": dict(by_replica), "runsExecutedBy": dict(ran_on),
        "leaseSeconds": LEASE_SECONDS,
        "killToInterruptedSeconds": round(to_interrupted, 2),
        "killToRetryStartedSeconds": round(retry_started, 2),
        "killToRetryCompletedSeconds": round(to_completed, 2),
        "retryRanOn": retry["leaseOwner"],
        "bigBackupSeconds": round((retry["finishedAt"] - retry["startedAt"]).total_seconds(),
                                  2),
    }
    sys.stdout.write("\nREPLICA FIGURES " + json.dumps(figures) + "\n")
    (WORK / "replica-figures.json").write_text(json.dumps(figures, indent=2))
