"""Continuous WAL archiving: one `pg_receivewal` per PITR source on the replica holding its
lease, each completed segment shipped as it lands and the segment being received shipped
once nothing has shipped for `partial_interval_seconds`; slot lag watched."""

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from app.config import Settings, SourceSettings
from app.models.backup import BackupType
from app.models.job import JobTrigger
from app.services.databases.base import SourceError
from app.services.databases.postgres.source import Connection, PgTools, stderr_tail
from app.services.jobs.runner import JobRunner
from app.services.ops.notify import Event, Message, send
from app.services.pitr import lease
from app.services.pitr.basebackup import submit_base_backup
from app.services.pitr.health import lease_name
from app.services.pitr.metrics import SLOT_LAG
from app.services.pitr.ship import PARTIAL, drop_partial, ship_file
from app.services.pitr.walnames import (
    DEFAULT_SEGMENT_SIZE,
    is_history,
    is_segment,
    segment_range,
)
from app.services.pitr.window import source_window
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)
TICK_SECONDS = 0.5
LAG_CHECK_SECONDS = 10.0
CHAIN_CHECK_SECONDS = 60.0  # reads every WAL record of the source
RESTART_SECONDS = 1.0


def slot_name(settings: Settings, source: str) -> str:
    return (settings.pitr.slot_prefix + source).replace("-", "_")


@dataclass
class ArchiverState:
    """What health, metrics and tests read about one source's archiver on this replica."""

    holding: bool = False
    receiver_pid: int | None = None
    receiver_restarts: int = 0
    lag_bytes: int | None = None
    lag_alert: bool = False
    chain_broken: bool = False
    shipped: int = 0
    last_error: str | None = None
    # Loop time of the last file shipped, whole or partial: the partial goes once this is
    # partial_interval_seconds old (then no received WAL waits longer than that).
    last_sent: float | None = None


class SourceArchiver:
    def __init__(self, settings: Settings, targets: StorageTargets, source: SourceSettings,
                 owner: str, runner: JobRunner | None = None) -> None:
        self.settings, self.targets, self.source, self.owner = settings, targets, source, owner
        self.runner = runner
        self.conn = Connection.parse(source.uri.get_secret_value(), source.database_name())
        self.tools = PgTools(settings.tools.pg_bin_dir)
        self.folder = settings.pitr.receive_dir / source.name
        self.slot = slot_name(settings, source.name)
        self.lease_name = lease_name(source.name)
        self.state = ArchiverState()
        self.segment_size = DEFAULT_SEGMENT_SIZE
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self) -> None:
        """Forever: wait for the lease, then receive and ship while holding it."""
        period = self.settings.pitr.lease_seconds / 3
        while True:
            try:
                if await lease.take_or_renew(self.lease_name, self.owner,
                                             self.settings.pitr.lease_seconds):
                    await self._hold()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.state.last_error = str(exc) or type(exc).__name__
                log.warning("wal archiver failed; retrying", source=self.source.name,
                            error=self.state.last_error)
            await asyncio.sleep(period)

    async def _hold(self) -> None:
        self.state.holding = True
        loop = asyncio.get_running_loop()
        renew_every = self.settings.pitr.lease_seconds / 3
        next_renew = next_lag = next_chain = 0.0
        try:
            await self._prepare()
            while True:
                now = loop.time()
                if now >= next_renew:
                    if not await lease.take_or_renew(self.lease_name, self.owner,
                                                     self.settings.pitr.lease_seconds,
                                                     self.status()):
                        log.warning("wal archiver lease lost", source=self.source.name)
                        return
                    next_renew = now + renew_every
                if self.proc is None or self.proc.returncode is not None:
                    await self._start_receiver()
                await self.ship_ready()
                if now >= next_lag:
                    next_lag = now + LAG_CHECK_SECONDS
                    chain = now >= next_chain
                    if chain:
                        next_chain = now + CHAIN_CHECK_SECONDS
                    await self._checks(chain)
                await asyncio.sleep(TICK_SECONDS)
        finally:
            self.state.holding = False
            await asyncio.shield(self._stop_receiver())
            with contextlib.suppress(Exception):
                await asyncio.shield(lease.release(self.lease_name, self.owner))

    async def _prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        conn = await self.conn.connect()
        try:
            self.segment_size = int(await conn.fetchval(
                "SELECT setting::bigint * 1 FROM pg_settings WHERE name = 'wal_segment_size'"))
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", self.slot)
            if not exists:
                # Reserved at once: the server keeps WAL from now on for this archiver.
                await conn.execute("SELECT pg_create_physical_replication_slot($1, true)",
                                   self.slot)
                log.info("replication slot created", source=self.source.name, slot=self.slot)
        finally:
            await conn.close()

    async def _start_receiver(self) -> None:
        if self.proc is not None:
            code = self.proc.returncode
            self.state.receiver_restarts += 1
            log.warning("pg_receivewal exited; restarting", source=self.source.name, code=code)
            await asyncio.sleep(RESTART_SECONDS)
        self._drop_unpadded()
        # Without --synchronous (the default) the slot keeps whatever was not yet flushed
        # here and the partial ships from the page cache; with it, an fsync per message
        # cost the primary 11.7% of its pgbench tps on a shared host (bench-pitr, scale 10).
        sync = ["--synchronous"] if self.settings.pitr.receiver_synchronous else []
        args = [self.tools.path("pg_receivewal"), f"--directory={self.folder}",
                f"--slot={self.slot}", "--no-loop", *sync, "--no-password",
                "--status-interval=1", f"--dbname={self.conn.uri}"]
        with self.conn.child_env() as env:
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=env)
        self.state.receiver_pid = self.proc.pid
        asyncio.create_task(self._log_stderr(self.proc))

    def _drop_unpadded(self) -> None:
        """A receiver killed while creating a segment leaves a .partial shorter than a
        segment: it zero-fills a new file before writing any WAL into it, so the file holds
        none, and pg_receivewal refuses to start beside it. The slot still has that WAL."""
        for path in self.folder.glob("*" + PARTIAL):
            size = path.stat().st_size
            if size not in (0, self.segment_size):
                log.warning("removing a half-created partial segment", source=self.source.name,
                            file=path.name, size=size)
                path.unlink()

    async def _log_stderr(self, proc: asyncio.subprocess.Process) -> None:
        text = await stderr_tail(proc.stderr)
        if text:
            self.state.last_error = text[-500:]
            log.warning("pg_receivewal said", source=self.source.name, stderr=text[-500:])

    async def _stop_receiver(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.state.receiver_pid = None

    async def ship_ready(self, force_partial: bool = False) -> int:
        """Ship every completed file of the folder (then remove it), and the partial one
        when its interval has passed; returns how many completed files went."""
        done = 0
        names = sorted(p.name for p in self.folder.iterdir()) if self.folder.exists() else []
        for name in names:
            path = self.folder / name
            if is_segment(name) or is_history(name):
                await ship_file(self.settings, self.targets, self.source.name, path,
                                self.segment_size)
                if is_segment(name):
                    await drop_partial(self.targets, self.source.name, name)
                path.unlink()
                done += 1
        self.state.shipped += done
        if done:
            self.state.last_sent = asyncio.get_running_loop().time()
        for name in names:
            if name.endswith(PARTIAL) and is_segment(name.removesuffix(PARTIAL)):
                await self._ship_partial(self.folder / name, force_partial)
        return done

    async def _ship_partial(self, path: Path, force: bool) -> None:
        loop = asyncio.get_running_loop()
        last = self.state.last_sent
        if not force and last is not None and \
                loop.time() - last < self.settings.pitr.partial_interval_seconds:
            return
        received = await self._received_in(path)
        try:
            await ship_file(self.settings, self.targets, self.source.name, path,
                            self.segment_size, received=received)
        except FileNotFoundError:
            return  # completed meanwhile: shipped whole at the next tick
        self.state.last_sent = loop.time()

    async def _received_in(self, path: Path) -> int | None:
        """How far into the partial segment WAL has been received: the receiver's write
        position as its walsender reports it (each second), else the slot's."""
        try:
            conn = await self.conn.connect()
        except SourceError:
            return None  # the primary is down: ship what was received all the same
        try:
            row = await conn.fetchrow(
                "SELECT pg_wal_lsn_diff(COALESCE(r.write_lsn, s.restart_lsn), '0/0') AS r "
                "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r "
                "ON r.pid = s.active_pid WHERE s.slot_name = $1", self.slot)
        finally:
            await conn.close()
        if row is None or row["r"] is None:
            return None
        start, end = segment_range(path.name.removesuffix(PARTIAL), self.segment_size)
        flushed = int(row["r"])
        return flushed - start if start <= flushed <= end else None

    async def check_lag(self) -> None:
        """The WAL the slot holds back on the primary; alert once per crossing."""
        conn = await self.conn.connect()
        try:
            lag = await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                "FROM pg_replication_slots WHERE slot_name = $1", self.slot)
        finally:
            await conn.close()
        self.state.lag_bytes = int(lag) if lag is not None else None
        if lag is None:
            return
        SLOT_LAG.labels(source=self.source.name).set(int(lag))
        over = int(lag) > self.settings.pitr.slot_lag_alert_bytes
        if over and not self.state.lag_alert:
            log.warning("replication slot lag above the alert", source=self.source.name,
                        slot=self.slot, lag_bytes=int(lag))
            await send(self.settings, Message(
                Event.health, f"Backvault: WAL slot lag of {self.source.name}",
                f"slot {self.slot} holds back {int(lag)} bytes of WAL on the primary "
                f"(alert above {self.settings.pitr.slot_lag_alert_bytes})", failure=True))
        self.state.lag_alert = over

    async def _checks(self, chain: bool) -> None:
        # A primary that is down must not stop the shipping of what was received.
        try:
            await self.check_lag()
            if chain:
                await self.check_chain()
        except (SourceError, OSError) as exc:
            self.state.last_error = getattr(exc, "message", None) or str(exc)
            log.warning("wal archiver checks failed", source=self.source.name,
                        error=self.state.last_error)

    async def check_chain(self) -> None:
        """A gap after the newest base backup notifies once and queues a new base backup
        (the WAL before the gap cannot reach the time after it)."""
        window = await source_window(self.settings, self.source.name)
        newest = window.base_backups[-1] if window.base_backups else None
        broken = bool(window.gaps) and newest is not None and (
            not newest.restorable or any(g.first_missing > newest.start_wal
                                         for g in window.gaps))
        if broken and not self.state.chain_broken:
            gaps = ", ".join(f"{g.first_missing}..{g.last_missing}" for g in window.gaps)
            log.warning("wal chain broken", source=self.source.name, gaps=gaps)
            await send(self.settings, Message(
                Event.health, f"Backvault: WAL chain of {self.source.name} broken",
                f"missing WAL {gaps}; a new base backup is queued", failure=True))
            if self.runner is not None:
                await submit_base_backup(self.runner, self.source.name, None,
                                         trigger=JobTrigger.schedule,
                                         backup_type=BackupType.automatic)
        self.state.chain_broken = broken

    def status(self) -> dict[str, Any]:
        return {"source": self.source.name, "slot": self.slot, "holding": self.state.holding,
                "receiverPid": self.state.receiver_pid, "lagBytes": self.state.lag_bytes,
                "lagAlert": self.state.lag_alert, "restarts": self.state.receiver_restarts,
                "lastError": self.state.last_error, "chainBroken": self.state.chain_broken,
                "shipped": self.state.shipped}


class WalArchivers:
    """Every PITR source's archiver of this replica, started and stopped with the app."""

    def __init__(self, settings: Settings, targets: StorageTargets,
                 owner: str | None = None, runner: JobRunner | None = None) -> None:
        self.owner = owner or uuid.uuid4().hex
        self.archivers: dict[str, SourceArchiver] = {}
        for name in settings.pitr.sources:
            source = settings.source(name)
            if source is None or source.kind != "postgres":
                raise SourceError(f"PITR source {name!r} is not a configured PostgreSQL source")
            self.archivers[name] = SourceArchiver(settings, targets, source, self.owner,
                                                  runner)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> "WalArchivers":
        self.tasks = [asyncio.create_task(a.run(), name=f"wal-archiver-{n}")
                      for n, a in self.archivers.items()]
        return self

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []


def start_archivers(settings: Settings, runner: JobRunner) -> WalArchivers:
    """The lifespan's one call: archivers of the configured PITR sources, running (a broken
    WAL chain queues a base backup on `runner`)."""
    return WalArchivers(settings, runner.targets, runner=runner).start()
