"""`make bench-pitr`: PITR on a throwaway PostgreSQL cluster of its own (it is killed).

rpo_s: committed transactions lost when the primary is killed under a steady write load
(seconds between the last commit a client saw and the last commit in the archive, read
with pg_waldump from the archived WAL; median of PITR_BENCH_TRIALS). tps_without /
tps_with / tps_with_pgbackrest: pgbench throughput without archiving (archive_command
/bin/true), with Backvault's (pg_receivewal, shipping) and with pgBackRest's archive_command
instead, on the same host as the primary; tps_with_bare_receiver: with a stock pg_receivewal
alone that ships nothing (bench/bare_receiver.py), the floor of any streaming archiver.
Each pgbench run starts at a CHECKPOINT and has none inside it, nor autovacuum; Backvault's
starts once the WAL its slot kept while stopped is received and shipped.
restore_s: base backup plus the WAL since (PITR_BENCH_WAL_MB), restored to a time into a
private instance and promoted; pgbackrest_restore_s: pgBackRest (Debian package,
bench/pgbackrest.py) restoring its own full backup of the same primary, taken beside
Backvault's, to the same time. Both restored instances are read back: they must hold the
same rows.

Sizes: PITR_BENCH_SCALE (70 ~ 1 GB), PITR_BENCH_WAL_MB (WAL after the base backup),
PITR_BENCH_SECONDS (each pgbench run), PITR_BENCH_TRIALS, PITR_BENCH_PARTIAL_S (partial
interval), PITR_BENCH_ROUNDS (the four pgbench runs alternated; medians).
"""

import asyncio
import json
import os
import pwd
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pyrage
from beanie import PydanticObjectId
from pymongo import AsyncMongoClient

from app.config import Settings
from app.models.job_params import PitrRestoreParams
from app.models.wal import WalSegment
from app.runtime import open_runtime
from app.services.jobs.runner import Progress
from app.services.pitr.archiver import WalArchivers
from app.services.pitr.basebackup import take_base_backup
from app.services.pitr.restore import restore_source
from app.services.pitr.ship import PARTIAL, fetch_to
from app.services.pitr.walnames import parse_lsn, segment_number
from bench.archive_cpu import metered
from bench.bare_receiver import BareReceiver
from bench.pgbackrest import PgBackRest
from bench.pitr_table import table

PG_BIN = Path(os.environ.get("BACKVAULT_PG_BIN", "/usr/lib/postgresql/15/bin"))
MONGO_URI = os.environ.get("BACKVAULT_MONGO_URI", "mongodb://127.0.0.1:57017/")
SCALE = int(os.environ.get("PITR_BENCH_SCALE", "70"))
WAL_MB = int(os.environ.get("PITR_BENCH_WAL_MB", "1024"))
SECONDS = int(os.environ.get("PITR_BENCH_SECONDS", "20"))
TRIALS = int(os.environ.get("PITR_BENCH_TRIALS", "5"))
ROUNDS = int(os.environ.get("PITR_BENCH_ROUNDS", "8"))
# pg_receivewal's folder (default on the work disk); /dev/shm/... for a diagnosis only.
SPOOL = os.environ.get("PITR_BENCH_SPOOL")
PARTIAL_S = float(os.environ.get("PITR_BENCH_PARTIAL_S", "30"))
RUN_USER = os.environ.get("BACKVAULT_PG_RUN_USER", "postgres")
WORK = Path(os.environ.get("PITR_BENCH_DIR", "/var/tmp/backvault-bench-pitr"))
RESULTS = Path(__file__).parent / "results"
COMMIT = re.compile(r"COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC")


def say(text: str) -> None:
    sys.stdout.write(f"[bench-pitr] {text}\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_user(args: list[str]) -> list[str]:
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", RUN_USER, "--", *args] if os.geteuid() == 0 else args


class Primary:
    def __init__(self, port: int) -> None:
        self.port, self.data = port, WORK / "primary"
        self.uri = f"postgresql://{RUN_USER}@127.0.0.1:{port}/bench"

    def init(self) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam(RUN_USER)
        os.chown(WORK, user.pw_uid, user.pw_gid)
        subprocess.run(as_user([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", RUN_USER,
                                "--auth=trust", "-E", "UTF8"]), check=True,
                       stdout=subprocess.DEVNULL)
        # Archiving on, to nowhere: pgBackRest's archive_command is switched in by reload.
        # No checkpoint or autovacuum inside a pgbench run (each starts at a CHECKPOINT):
        # where one fell decided a run's tps more than archiving did.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\narchive_mode = on\narchive_command = '/bin/true'\n"
                       "max_wal_size = 16GB\ncheckpoint_timeout = 1h\nautovacuum = off\n")
        self.start()
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", RUN_USER, "bench"], check=True)
        subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(SCALE), self.uri],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        subprocess.run(as_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                                str(WORK / "primary.log"), "-o",
                                f"-p {self.port} -k {WORK} -c listen_addresses=127.0.0.1",
                                "start"]), check=True, stdout=subprocess.DEVNULL)

    async def archive_to(self, command: str) -> None:
        """Set archive_command (pgBackRest's, or /bin/true) and reload."""
        conn = await asyncpg.connect(self.uri)
        try:
            await conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    def kill(self) -> None:
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 9)

    def stop(self) -> None:
        subprocess.run(as_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                                "immediate", "stop"]), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def pgbench_tps(uri: str) -> float:
    subprocess.run([str(PG_BIN / "psql"), "-q", "-c", "CHECKPOINT", uri], check=True)
    out = subprocess.run([str(PG_BIN / "pgbench"), "-c", "4", "-j", "2", "-T", str(SECONDS),
                          uri], check=True, capture_output=True, text=True).stdout
    found = re.search(r"tps = ([\d.]+)", out)
    assert found, out
    return float(found.group(1))


def settings_for(primary: Primary) -> Settings:
    key = pyrage.x25519.Identity.generate()
    (WORK / "key.txt").write_text(f"{key}\n")
    return Settings.model_validate({
        "system": {"environment": "development", "log_level": "warning", "enabled": False},
        "catalog": {"mongo_uri": MONGO_URI, "database": "backvault_bench_pitr",
                    "source_name": ""},
        "auth": {"jwt_secret": "bench-" + "x" * 40},
        "storage": {"local_dir": str(WORK / "store")},
        "sources": [{"name": "benchpg", "kind": "postgres", "uri": primary.uri}],
        "tools": {"pg_bin_dir": str(PG_BIN)},
        "encryption": {"recipients": [str(key.to_public())],
                       "identity_file": str(WORK / "key.txt")},
        "limits": {"max_size_mb": 100_000, "timeout_seconds": 7200},
        "pitr": {"sources": ["benchpg"], "receive_dir": SPOOL or str(WORK / "spool"),
                 "restore_dir": str(WORK / "restore"), "partial_interval_seconds": PARTIAL_S,
                 "run_user": RUN_USER},
    })


async def write_until_killed(primary: Primary) -> float:
    """Commit a row every 10 ms; kill the primary at a random moment; the last commit's
    time as the client saw it."""
    conn = await asyncpg.connect(primary.uri)
    await conn.execute("CREATE TABLE IF NOT EXISTS rpo (at timestamptz)")
    last, stop_at = 0.0, time.time() + random.uniform(5, 20)
    try:
        while time.time() < stop_at:
            await conn.execute("INSERT INTO rpo VALUES (now())")
            last = time.time()
            await asyncio.sleep(0.01)
        primary.kill()
    finally:
        conn.terminate()
    return last


async def archived_last_commit(settings: Settings, targets: Any) -> float:
    """The newest commit time in the archived WAL (pg_waldump of the last segments)."""
    segments = [s for s in await WalSegment.find({"source": "benchpg"}).to_list()
                if not s.history]
    segments.sort(key=lambda s: (segment_number(s.segment), not s.partial))
    newest = 0.0
    for seg in segments[-3:]:
        path = WORK / "waldump" / seg.segment
        path.parent.mkdir(exist_ok=True)
        await fetch_to(settings, targets, "benchpg", seg.segment, path)
        out = subprocess.run([str(PG_BIN / "pg_waldump"), str(path)], capture_output=True,
                             text=True).stdout
        for stamp in COMMIT.findall(out):
            newest = max(newest, datetime.fromisoformat(stamp + "+00:00").timestamp())
    return newest


async def query(uri: str, sql: str) -> Any:
    conn = await asyncpg.connect(uri)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def wal_since(primary: Primary, start: str) -> int:
    lsn = parse_lsn(start)
    return int(await query(primary.uri, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), "
                                        f"'{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}'::pg_lsn)"))


async def caught_up(primary: Primary, archivers: WalArchivers) -> None:
    """Until the receiver has the WAL its slot kept while it was stopped and every completed
    segment of it is shipped: the steady state is measured, not the catching up."""
    while True:
        behind = await query(primary.uri, "SELECT min(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                                          "write_lsn)) FROM pg_stat_replication")
        waiting = [p for a in archivers.archivers.values() if a.folder.exists()
                   for p in a.folder.iterdir() if not p.name.endswith(PARTIAL)]
        if behind is not None and behind < 1 << 20 and not waiting:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)


async def tps_rounds(primary: Primary, archivers: WalArchivers,
                     pgbackrest: str) -> dict[str, Any]:
    """pgbench without archiving, with Backvault's, with pgBackRest's archive_command
    instead, and with a bare pg_receivewal alone, alternated ROUNDS times; the medians of
    tps and of archiving CPU per GB of WAL."""
    names = ["tps_without", "tps_with", "tps_with_pgbackrest", "tps_with_bare_receiver"]
    runs: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    bare = BareReceiver(WORK, PG_BIN, primary.uri)

    async def measure(name: str, receivers: list[int], own: bool = False) -> None:
        tps, cpu_s = await metered(primary.uri, partial(pgbench_tps, primary.uri), receivers,
                                   own)
        runs[name].append(tps)
        cpu[name].append(cpu_s)

    for _ in range(ROUNDS):
        await archivers.stop()
        await measure("tps_without", [])
        archivers.start()
        await caught_up(primary, archivers)
        await measure("tps_with", [a.proc.pid for a in archivers.archivers.values() if a.proc],
                      own=True)
        await archivers.stop()
        await primary.archive_to(pgbackrest)
        await measure("tps_with_pgbackrest", [])
        await primary.archive_to("/bin/true")
        await bare.start()
        await measure("tps_with_bare_receiver", [bare.proc.pid] if bare.proc else [])
        await bare.stop()
        archivers.start()
        say("tps without / Backvault / pgBackRest / bare pg_receivewal: "
            + " / ".join(f"{runs[n][-1]:.0f} ({cpu[n][-1]:.1f} s/GB)" for n in names))
    without = runs["tps_without"]
    return {**{name: statistics.median(tps) for name, tps in runs.items()}, "tps_runs": runs,
            "tps_without_stdev_pct": round(100 * statistics.stdev(without)
                                           / statistics.mean(without), 1),
            "archive_cpu_s_per_gb": {name.removeprefix("tps_"): round(
                statistics.median(values), 2) for name, values in cpu.items()}}


async def write_wal(primary: Primary, start: str) -> None:
    while await wal_since(primary, start) < WAL_MB << 20:
        await asyncio.to_thread(subprocess.run, [
            str(PG_BIN / "pgbench"), "-c", "4", "-j", "2", "-T", "10", primary.uri],
            check=True, capture_output=True)


async def mark_target(primary: Primary) -> str:
    """Five marks committed before the target time and five after, then a WAL switch; the
    target time (both restores must hold exactly the first five)."""
    conn = await asyncpg.connect(primary.uri)
    try:
        await conn.execute("CREATE TABLE marks (n int, at timestamptz DEFAULT clock_timestamp())")
        for n in range(10):
            if n == 5:
                await asyncio.sleep(1)
                target = str(await conn.fetchval("SELECT clock_timestamp()::text"))
                await asyncio.sleep(1)
            await conn.execute("INSERT INTO marks (n) VALUES ($1)", n)
        switched = str(await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())"))
        while (str(await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver"))
               < switched):
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    while not await WalSegment.find_one({"source": "benchpg", "segment": switched,
                                         "partial": False}):
        await asyncio.sleep(0.5)
    return target


READ_BACK = "SELECT (SELECT count(*) FROM marks) || '/' || (SELECT sum(abalance) FROM " \
            "pgbench_accounts)"


async def restore_both(settings: Settings, targets: Any, rest: PgBackRest,
                       target: str) -> dict[str, Any]:
    """Backvault's restore to `target`, then pgBackRest's; each instance read back."""
    started = time.monotonic()
    params = PitrRestoreParams(source="benchpg", target_time=datetime.fromisoformat(target),
                               dry_run=False)
    result = await restore_source(settings, targets, Progress(), params, "bench")
    restore_s = time.monotonic() - started
    ours = await query(f"postgresql://{RUN_USER}@127.0.0.1:{result['port']}/bench", READ_BACK)
    subprocess.run(result["stopCommand"].split(), stdout=subprocess.DEVNULL)
    say(f"backvault restore to {target}: {restore_s:.1f} s, marks/balance {ours}")
    port, into = free_port(), WORK / "pgbackrest-restore"
    pgbackrest_s = rest.restore_to(target, into, port)
    try:
        theirs = await query(f"postgresql://{RUN_USER}@127.0.0.1:{port}/bench", READ_BACK)
    finally:
        rest.stop(into)
    say(f"pgbackrest restore to {target}: {pgbackrest_s:.1f} s, marks/balance {theirs}")
    return {"restore_s": round(restore_s, 2), "pgbackrest_restore_s": round(pgbackrest_s, 2),
            "target_time": target, "read_back": ours, "same_rows": ours == theirs
            and ours.startswith("5/")}


async def rpo_trials(primary: Primary, settings: Settings, targets: Any) -> list[float]:
    rpos = []
    for trial in range(TRIALS):
        last_seen = await write_until_killed(primary)
        await asyncio.sleep(PARTIAL_S + 5)  # the service outlives the primary
        archived = await archived_last_commit(settings, targets)
        rpos.append(max(0.0, last_seen - archived))
        say(f"trial {trial + 1}: rpo {rpos[-1]:.2f} s")
        primary.start()
    return rpos


async def measure(primary: Primary) -> dict[str, Any]:
    settings = settings_for(primary)
    rest = PgBackRest(WORK, primary.data, primary.port, PG_BIN, RUN_USER, as_user)
    async with open_runtime(settings) as runtime:
        archivers = WalArchivers(settings, runtime.targets).start()
        try:
            archive_command = rest.configure()
            rest.run("stanza-create")
            tps = await tps_rounds(primary, archivers, archive_command)
            await primary.archive_to(archive_command)
            pgbackrest_backup_s = rest.backup()
            started = time.monotonic()
            base = await take_base_backup(settings, runtime.targets, Progress(), "benchpg",
                                          admin=PydanticObjectId())
            backup_s = time.monotonic() - started
            say(f"full backups: backvault {backup_s:.1f} s, pgbackrest "
                f"{pgbackrest_backup_s:.1f} s")
            await write_wal(primary, base.options["pitr"]["stopLsn"])
            target = await mark_target(primary)
            restored = await restore_both(settings, runtime.targets, rest, target)
            rpos = await rpo_trials(primary, settings, runtime.targets)
        finally:
            await archivers.stop()
    return {"scale": SCALE, "wal_mb": WAL_MB, "partial_interval_s": PARTIAL_S,
            "rpo_s": statistics.median(rpos), "rpo_trials_s": rpos,
            **tps, **restored,
            "base_backup_s": round(backup_s, 2),
            "pgbackrest_backup_s": round(pgbackrest_backup_s, 2),
            "base_bytes": base.stored_bytes, "base_plain_bytes": base.plaintext_bytes}


async def drop_catalog() -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    await client.drop_database("backvault_bench_pitr")
    await client.close()


async def main() -> dict[str, Any]:
    shutil.rmtree(WORK, ignore_errors=True)
    await drop_catalog()  # a run that failed leaves its records
    primary = Primary(free_port())
    try:
        say(f"primary: pgbench scale {SCALE}")
        primary.init()
        return await measure(primary)
    finally:
        primary.stop()
        await drop_catalog()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    outcome = asyncio.run(main())
    RESULTS.mkdir(exist_ok=True)
    name = os.environ.get("PITR_BENCH_NAME", "pitr")
    (RESULTS / f"{name}.json").write_text(json.dumps(outcome, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table(outcome, SECONDS))
    sys.stdout.write(table(outcome, SECONDS))
