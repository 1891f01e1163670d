"""The floor of streaming in `make bench-pitr`: stock pg_receivewal alone on a slot of its
own, each completed segment deleted as it lands (no compression, encryption, storage or
catalog). What the walsender and a receiver cost the primary before anything is shipped."""

import asyncio
import contextlib
import shutil
from pathlib import Path

import asyncpg

SLOT = "bench_bare_receiver"


class BareReceiver:
    def __init__(self, work: Path, pg_bin: Path, uri: str) -> None:
        self.folder, self.pg_bin, self.uri = work / "bare-receiver", pg_bin, uri
        self.proc: asyncio.subprocess.Process | None = None
        self.sweeper: asyncio.Task[None] | None = None

    async def _slot(self, sql: str) -> None:
        conn = await asyncpg.connect(self.uri)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def start(self) -> None:
        """A new slot reserved from now (nothing to catch up), then the receiver."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        await self._slot(f"SELECT pg_create_physical_replication_slot('{SLOT}', true)")
        self.proc = await asyncio.create_subprocess_exec(
            str(self.pg_bin / "pg_receivewal"), f"--directory={self.folder}", f"--slot={SLOT}",
            "--no-loop", "--no-password", "--status-interval=1", f"--dbname={self.uri}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        self.sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            for path in self.folder.iterdir():
                if not path.name.endswith(".partial"):
                    path.unlink(missing_ok=True)
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self.proc = self.sweeper = None
        await self._slot(f"SELECT pg_drop_replication_slot('{SLOT}')")
        shutil.rmtree(self.folder, ignore_errors=True)
