"""Reading a `pg_dump -Fc` archive without a database: `pg_restore --data-only` to a
stream whose COPY blocks are counted per table (deep verification)."""

import asyncio
import re
from contextlib import aclosing

from app.services.artifacts.stages import CHUNK, Chunks
from app.services.databases.base import SourceError
from app.services.databases.postgres.source import PgTools, stderr_tail

_IDENT = rb'("(?:[^"]|"")*"|[^\s".]+)'
_COPY_LINE = re.compile(rb"COPY " + _IDENT + rb"\." + _IDENT + rb"[ (]")


def _unquote_ident(raw: bytes) -> str:
    name = raw.decode(errors="replace")
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


class CopyRowCounter:
    """Rows per table in `pg_restore --data-only -f -` output, fed in pieces: the lines
    between `COPY schema.table ... FROM stdin;` and `\\.` (COPY text escapes newlines in
    values, so one line is one row). Only the start of a line outside the data is kept."""

    LINE_LIMIT = 64 * 1024

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.table: str | None = None
        self.pending = b""  # the start of the current, unfinished line

    def feed(self, data: bytes) -> None:
        while data:
            data = self._rows(data) if self.table is not None else self._statement(data)

    def _statement(self, data: bytes) -> bytes:
        end = data.find(b"\n")
        if end < 0:
            self.pending = (self.pending + data)[:self.LINE_LIMIT]
            return b""
        line = (self.pending + data[:min(end, self.LINE_LIMIT)])[:self.LINE_LIMIT]
        self.pending = b""
        match = _COPY_LINE.match(line)
        if match:
            self.table = f"{_unquote_ident(match[1])}.{_unquote_ident(match[2])}"
            self.counts[self.table] = 0
        return data[end + 1:]

    def _rows(self, data: bytes) -> bytes:
        assert self.table is not None
        buffer = self.pending + data  # pending starts a line, so "\n" may go before it
        end = (b"\n" + buffer).find(b"\n\\.\n")
        if end >= 0:
            self.counts[self.table] += buffer.count(b"\n", 0, end)
            self.table, self.pending = None, b""
            return buffer[end + 3:]
        self.counts[self.table] += buffer.count(b"\n")
        rest = buffer[buffer.rfind(b"\n") + 1:]
        # Three bytes without a newline already rule out the end marker: keep no more.
        self.pending = rest if len(rest) < 3 else b"row"
        return b""

    def finish(self) -> dict[str, int]:
        if self.table is not None:
            raise SourceError(f"The archive's data for table {self.table} is cut short")
        return self.counts


async def check_pg_archive(chunks: Chunks, tools: PgTools) -> dict[str, int]:
    """Feed a whole archive to `pg_restore --data-only -f -` and count each table's rows
    as the SQL streams out; returns them by `schema.table`, in archive order."""
    args = [tools.path("pg_restore"), "--data-only", "--file=-"]
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    counter = CopyRowCounter()

    async def count(stdout: asyncio.StreamReader) -> None:
        while data := await stdout.read(CHUNK):
            counter.feed(data)

    reading = asyncio.create_task(count(proc.stdout))
    errors = asyncio.create_task(stderr_tail(proc.stderr))
    try:
        try:
            async with aclosing(chunks) as source:
                async for chunk in source:
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # pg_restore stopped reading; its exit status says why
        proc.stdin.close()
        await reading
        code = await proc.wait()
        stderr = await errors
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for task in (reading, errors):
            task.cancel()
        await asyncio.gather(reading, errors, return_exceptions=True)
        raise
    if code != 0:
        raise SourceError(f"pg_restore could not read the archive: {stderr[-2000:]}")
    return counter.finish()
