"""A private PostgreSQL instance for a restore: the data directory unpacked from a base
backup, recovery settings, start as the configured OS user, promotion, copy-out, stop."""

import asyncio
import os
import pwd
import shlex
import shutil
from contextlib import aclosing
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.config import Settings, SourceSettings
from app.errors import ConflictError
from app.models.backup import Backup
from app.models.wal import PitrRestoreRequest
from app.services.artifacts.read import opened
from app.services.artifacts.stages import Digest
from app.services.databases.base import SourceError
from app.services.databases.postgres.source import PgTools, PostgresSource, stderr_tail
from app.services.storage import StorageTargets

# Recovery fails when its log shows no progress this long (a restore may take hours).
STALL_SECONDS = 900.0
START_SECONDS = 30.0  # for the postmaster to write its pid file
PROMOTED = ("archive recovery complete", "database system is ready to accept connections")


async def unpack_base(settings: Settings, targets: StorageTargets, backup: Backup,
                      data_dir: Path) -> None:
    """Stream the base backup through age and zstd into `tar -x`; its SHA-256 checked."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    digest = Digest()
    raw = digest.tap(targets.for_backup(backup).get(backup.storage_key or ""))
    proc = await asyncio.create_subprocess_exec(
        "tar", "-x", "-C", str(data_dir), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    errors = asyncio.create_task(stderr_tail(proc.stderr))
    try:
        async with aclosing(opened(raw, backup.format_chain, settings)) as chunks:
            async for chunk in chunks:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        proc.stdin.close()
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = await errors
    if code != 0:
        raise SourceError(f"tar could not unpack the base backup: {text or code}")
    if digest.hexdigest != backup.sha256:
        raise SourceError(f"Base backup {backup.id}: stored bytes do not match its SHA-256")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PrivateInstance:
    def __init__(self, settings: Settings, work: Path, port: int) -> None:
        self.settings, self.work, self.port = settings, work, port
        self.data_dir, self.wal_dir = work / "data", work / "wal"
        self.log = work / "postgres.log"
        self.expected, self.script = work / "wal.expected", work / "fetch-wal.sh"
        self.tools = PgTools(settings.tools.pg_bin_dir)
        self.as_root = os.geteuid() == 0
        self.started = False

    def _as_user(self, args: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root.
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", self.settings.pitr.run_user, "--", *args] if self.as_root \
            else args

    def expect(self, names: list[str]) -> None:
        """The WAL files the restore brings into `wal_dir` while recovery runs. The
        restore_command waits for one of them and refuses any other name at once (a
        newer timeline's history file, the segment after the end: exit 1, "not there").
        Anything else that goes wrong exits 255, which makes PostgreSQL stop with an
        error instead of ending recovery early at an older moment."""
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        self.expected.write_text("".join(f"{n}\n" for n in names))
        listed, folder = shlex.quote(str(self.expected)), shlex.quote(str(self.wal_dir))
        self.script.write_text(
            "#!/bin/sh\n"
            f'grep -qxF "$1" {listed} || exit 1\n'
            f'while [ ! -e {folder}/"$1" ]; do\n'
            # A restore that fails, stops or dies takes the list (or itself) away: no
            # waiter outlives it.
            f'  [ -e {listed} ] && [ -d /proc/{os.getpid()} ] || exit 255\n'
            '  sleep 0.05\n'
            'done\n'
            f'cp {folder}/"$1" "$2" || exit 255\n')

    def release(self) -> None:
        """Waiting restore_commands give up (a failed or stopped restore)."""
        self.expected.unlink(missing_ok=True)

    def configure(self, request: PitrRestoreRequest) -> None:
        script = shlex.quote(str(self.script)).replace("%", "%%")
        lines = [f"restore_command = {_quote(f'sh {script} %f %p')}",
                 "recovery_target_action = 'promote'",
                 "recovery_target_timeline = 'latest'",
                 f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                 f"unix_socket_directories = {_quote(str(self.work))}",
                 # No read-only queries during recovery: it then needs no parameter to be
                 # at least the primary's (max_connections and the like).
                 "hot_standby = off", "archive_mode = off"]
        if request.target_time is not None:
            lines.append(f"recovery_target_time = {_quote(request.target_time.isoformat())}")
        elif request.target_lsn is not None:
            lines.append(f"recovery_target_lsn = {_quote(request.target_lsn)}")
        with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write("\n# Backvault point-in-time restore\n" + "\n".join(lines) + "\n")
        (self.data_dir / "recovery.signal").touch()
        for stale in ("postmaster.pid", "standby.signal"):
            (self.data_dir / stale).unlink(missing_ok=True)
        if self.as_root:
            user = pwd.getpwnam(self.settings.pitr.run_user)
            for folder, dirs, files in os.walk(self.work):
                for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                    os.chown(name, user.pw_uid, user.pw_gid)
        self.work.chmod(0o700)
        self.data_dir.chmod(0o700)

    async def _pg_ctl(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *self._as_user([self.tools.path("pg_ctl"), "-D", str(self.data_dir), *args]),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def start(self) -> None:
        """Launch the postmaster without waiting: with hot_standby off, `pg_ctl -w` would
        wait for the whole recovery under its own timeout (wait_promoted watches it)."""
        self.started = True  # even if cancelled while pg_ctl runs: stop() then stops it
        code, out = await self._pg_ctl("-l", str(self.log), "-W", "-o", f"-p {self.port}",
                                       "start")
        if code != 0:
            raise SourceError(f"The private PostgreSQL did not start: {self._log_tail() or out}")

    def _log_from(self, offset: int) -> bytes:
        try:
            with self.log.open("rb") as log:
                log.seek(offset)
                return log.read()
        except FileNotFoundError:
            return b""

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:].strip()
        except OSError:
            return ""

    def uri(self, source: SourceSettings, database: str) -> str:
        parts = urlsplit(source.uri.get_secret_value())
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, "/" + database, "", ""))

    async def wait_promoted(self) -> None:
        """Until recovery reached its target and the instance was promoted; fails when the
        postmaster is gone, or its log shows no progress for STALL_SECONDS."""
        loop = asyncio.get_running_loop()
        started, seen_pid, read, tail = loop.time(), False, 0, ""
        deadline = started + STALL_SECONDS
        found: set[str] = set()
        while True:
            running = self.data_dir.joinpath("postmaster.pid").exists()
            seen_pid = seen_pid or running
            if not running and (seen_pid or loop.time() > started + START_SECONDS):
                raise SourceError(f"Recovery failed: {self._log_tail()}")
            new = self._log_from(read)
            if new:  # only what was logged since: a long recovery logs a line per file
                read, deadline = read + len(new), loop.time() + STALL_SECONDS
                text = tail + new.decode(errors="replace")
                found |= {m for m in PROMOTED if m in text}
                tail = text[-200:]
            if len(found) == len(PROMOTED):
                return
            if loop.time() > deadline:
                raise SourceError(f"Recovery made no progress for {STALL_SECONDS:.0f} s: "
                                  f"{self._log_tail()}")
            await asyncio.sleep(0.2)

    async def copy_database(self, source: SourceSettings, database: str, target: str,
                            confirm: str | None) -> None:
        """`pg_dump -Fc` of one database of the instance, restored into `target` on the
        source's server (a new database, or an existing one when `confirm` names it)."""
        live = PostgresSource(source.uri.get_secret_value(), source.database_name(),
                              self.tools)
        exists = await live.database_exists(target)
        if exists and confirm != target:
            raise ConflictError(f"Database {target} exists: name it in \"confirm\" to replace "
                                "its objects", {"field": "confirm"})
        private = PostgresSource(self.uri(source, database), database, self.tools)
        dump = self.work / "copy.pgdump"
        with private.conn.child_env() as env:
            proc = await asyncio.create_subprocess_exec(
                self.tools.path("pg_dump"), "--format=custom", "--no-password",
                f"--file={dump}", f"--dbname={private.conn.uri}",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=env)
            text = await stderr_tail(proc.stderr)
            if await proc.wait() != 0:
                raise SourceError(f"pg_dump of the restored instance failed: {text}")
        await live.restore_file(dump, target, drop_existing=exists)

    async def stop(self) -> None:
        self.release()
        if self.started and self.data_dir.joinpath("postmaster.pid").exists():
            await self._pg_ctl("-m", "fast", "-w", "stop")
        self.started = False

    def stop_command(self) -> str:
        prefix = f"runuser -u {self.settings.pitr.run_user} -- " if self.as_root else ""
        return f"{prefix}{self.tools.path('pg_ctl')} -D {self.data_dir} -m fast stop"


