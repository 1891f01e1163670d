"""pgBackRest beside Backvault in `make bench-pitr`: the same primary archived by both
(pgBackRest through `archive_command`, Backvault through its replication slot), one
full backup each, then each restores to the same time into a private instance.

pgBackRest runs with its defaults (one process, synchronous archive-push) except for
zstd compression and AES-256 encryption, the counterparts of Backvault's zstd and age.
"""

import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from app.services.pitr.instance import PROMOTED

STANZA = "bench"


class PgBackRest:
    def __init__(self, work: Path, data: Path, port: int, pg_bin: Path, run_user: str,
                 as_user: Callable[[list[str]], list[str]]) -> None:
        self.work, self.data, self.port = work / "pgbackrest", data, port
        self.socket_dir, self.pg_bin, self.run_user = work, pg_bin, run_user
        self.as_user = as_user
        self.conf = self.work / "pgbackrest.conf"
        self.binary = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"

    def configure(self) -> str:
        """Write its configuration (the cipher pass in the file, never in arguments);
        the primary's archive_command."""
        for sub in ("repo", "log", "lock", "spool"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "[global]", f"repo1-path={self.work / 'repo'}", "repo1-retention-full=2",
            "compress-type=zst", "repo1-cipher-type=aes-256-cbc",
            f"repo1-cipher-pass={secrets.token_hex(32)}",
            f"log-path={self.work / 'log'}", f"lock-path={self.work / 'lock'}",
            f"spool-path={self.work / 'spool'}", "log-level-console=warn", "start-fast=y",
            f"[{STANZA}]", f"pg1-path={self.data}", f"pg1-port={self.port}",
            f"pg1-socket-path={self.socket_dir}", f"pg1-user={self.run_user}", ""]))
        subprocess.run(["chown", "-R", f"{self.run_user}:", str(self.work)], check=True)
        self.conf.chmod(0o600)
        return f"{self.binary} --config={self.conf} --stanza={STANZA} archive-push %p"

    def run(self, *args: str) -> None:
        subprocess.run(self.as_user([self.binary, f"--config={self.conf}",
                                     f"--stanza={STANZA}", *args]),
                       check=True, stdout=subprocess.DEVNULL)

    def backup(self) -> float:
        """One full backup (after stanza-create); its seconds."""
        started = time.monotonic()
        self.run("--type=full", "backup")
        return time.monotonic() - started

    def restore_to(self, target_time: str, into: Path, port: int) -> float:
        """Restore to `target_time` into `into`, start it on `port` and wait until it is
        promoted (as Backvault's restore does); its seconds. The instance stays up."""
        into.mkdir(mode=0o700)
        subprocess.run(["chown", f"{self.run_user}:", str(into)], check=True)
        started = time.monotonic()
        self.run(f"--pg1-path={into}", "--type=time", f"--target={target_time}",
                 "--target-action=promote", "restore")
        log = into.parent / f"{into.name}.log"
        subprocess.run(self.as_user([
            str(self.pg_bin / "pg_ctl"), "-D", str(into), "-l", str(log), "-w", "-t", "900",
            "-o", f"-p {port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                  "-c hot_standby=off -c archive_mode=off", "start"]),
            check=True, stdout=subprocess.DEVNULL)
        wait_promoted(log)
        return time.monotonic() - started

    def stop(self, into: Path) -> None:
        subprocess.run(self.as_user([str(self.pg_bin / "pg_ctl"), "-D", str(into), "-m",
                                     "fast", "stop"]), stdout=subprocess.DEVNULL)


def wait_promoted(log: Path, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if all(line in text for line in PROMOTED):
            return
        if "FATAL" in text:
            raise RuntimeError(f"recovery failed: {text[-1500:]}")
        time.sleep(0.1)
    raise RuntimeError("recovery did not finish in time")
