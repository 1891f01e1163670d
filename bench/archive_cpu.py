"""CPU that archiving takes during a pgbench run, in seconds per GB of WAL written: the
walsender and the archiver process of the primary (with the archive_command children it
waited for: pgBackRest's archive-push), the receiver, and this process (Backvault's
shipping runs in it). tps on a shared VM varies by about 10% between identical runs; CPU
time per GB of WAL does not, so it compares the archivers where tps cannot."""

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg

HZ = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int, children: bool = False) -> int:
    """utime + stime (+ cutime + cstime: children waited for) of a live process, else 0."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return sum(int(f) for f in fields[11:15 if children else 13])


async def _server(uri: str) -> tuple[list[int], list[int], int]:
    """Walsender pids, archiver pids, and the WAL position in bytes."""
    conn = await asyncpg.connect(uri)
    try:
        rows = await conn.fetch("SELECT pid, backend_type FROM pg_stat_activity "
                                "WHERE backend_type IN ('walsender', 'archiver')")
        lsn = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
    finally:
        await conn.close()
    return ([r["pid"] for r in rows if r["backend_type"] == "walsender"],
            [r["pid"] for r in rows if r["backend_type"] == "archiver"], int(lsn))


def _cpu_s(senders: list[int], archivers: list[int], receivers: list[int], own: bool) -> float:
    ticks = sum(_ticks(p) for p in senders + receivers) + \
        sum(_ticks(p, children=True) for p in archivers)
    mine = os.times()
    return ticks / HZ + ((mine.user + mine.system) if own else 0.0)


async def metered(uri: str, run: Callable[[], float], receivers: list[int],
                  own: bool) -> tuple[float, float]:
    """`run`'s tps, and the archiving CPU seconds per GB of WAL written meanwhile."""
    senders, archivers, start = await _server(uri)
    before = _cpu_s(senders, archivers, receivers, own)
    tps = await asyncio.to_thread(run)
    after = _cpu_s(senders, archivers, receivers, own)
    *_, end = await _server(uri)
    return tps, (after - before) / max(end - start, 1) * 1e9
