"""PostgreSQL source: `pg_dump -Fc -Z0` streamed from a subprocess, metadata and exact row
counts from the same exported snapshot, and `pg_restore` into a target database."""

import asyncio
import collections
import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import asyncpg

from app.models.backup import ContentEntry
from app.services.artifacts.stages import CHUNK, Chunks
from app.services.databases.base import DumpInfo, SourceError

STDERR_TAIL = 64 * 1024
PIPE_SIZE = 1024 * 1024

TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1, 2
"""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    bytes: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass
class PgDumpOptions:
    schema_only: bool = False
    data_only: bool = False
    tables: list[str] = field(default_factory=list)


SECRET_PARAMS = ("password", "sslpassword", "passfile")
SERVICE = "backvault"


def _build_uri(scheme: str, netloc: str, database: str, query: list[tuple[str, str]]) -> str:
    # By hand: urlunsplit turns `postgresql:///db` (a local socket) into `postgresql:/db`.
    uri = f"{scheme}://{netloc}/{quote(database, safe='')}"
    return f"{uri}?{urlencode(query, quote_via=quote)}" if query else uri


@dataclass
class Connection:
    """A libpq URI split in two: `uri`, safe to pass as an argument (no password,
    sslpassword or passfile), and the secrets, which reach a child only through its
    environment: argv is readable by every local user, a process's environment is not."""

    uri: str
    database: str
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    dsn: str = field(default="", repr=False)  # the whole URI, for asyncpg (in-process)

    @classmethod
    def parse(cls, uri: str, database: str | None = None) -> "Connection":
        parts = urlsplit(uri)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user, has_password, password = userinfo.partition(":")
        query = parse_qsl(parts.query, keep_blank_values=True)
        secrets = {"password": unquote(password)} if has_password else {}
        # libpq lets a query parameter win over the user-info part.
        secrets.update((k, v) for k, v in query if k in SECRET_PARAMS)
        named = [v for k, v in query if k == "dbname"]
        db = database or unquote(parts.path.lstrip("/")) or (named[-1] if named else "postgres")
        # dbname would override the path that for_database sets: the path alone names it.
        plain = [(k, v) for k, v in query if k not in SECRET_PARAMS and k != "dbname"]
        safe = _build_uri(parts.scheme, f"{user}@{hosts}" if user else hosts, db, plain)
        dsn = _build_uri(parts.scheme, parts.netloc, db, [(k, v) for k, v in query
                                                          if k != "dbname"])
        return cls(safe, db, secrets, dsn)

    def for_database(self, database: str) -> "Connection":
        return Connection.parse(self.dsn, database)

    async def connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self.dsn, timeout=15)
        except (OSError, asyncpg.PostgresError) as exc:
            raise SourceError(f"Cannot connect to PostgreSQL database {self.database}: "
                              f"{exc}") from exc

    @contextlib.contextmanager
    def child_env(self) -> Iterator[dict[str, str]]:
        """The environment of a libpq tool (pg_dump, pg_restore, psql) for this connection.
        sslpassword has no variable: it goes in a 0600 service file removed at the end."""
        # Neither another connection's libpq settings nor the service's own secrets
        # (BACKUP_*: JWT key, every source's URI) reach the tool.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BACKUP_"))}
        env["PGCONNECT_TIMEOUT"] = "15"
        if "password" in self.secrets:
            env["PGPASSWORD"] = self.secrets["password"]
        if "passfile" in self.secrets:
            env["PGPASSFILE"] = self.secrets["passfile"]
        ssl_password = self.secrets.get("sslpassword")
        if ssl_password is None:
            yield env
            return
        if "\n" in ssl_password or "\r" in ssl_password:
            raise SourceError("The sslpassword of a PostgreSQL source cannot hold a line break")
        fd, name = tempfile.mkstemp(prefix="backvault-pg-", suffix=".conf")  # mode 0600
        try:
            with os.fdopen(fd, "w") as service:
                service.write(f"[{SERVICE}]\nsslpassword={ssl_password}\n")
            env["PGSERVICEFILE"], env["PGSERVICE"] = name, SERVICE
            yield env
        finally:
            os.unlink(name)


class PgTools:
    """Where pg_dump and pg_restore are."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir

    def path(self, name: str) -> str:
        if self.bin_dir is not None:
            candidate = self.bin_dir / name
            if candidate.exists():
                return str(candidate)
        found = shutil.which(name)
        if not found:
            raise SourceError(f"{name} not found (set BACKUP_TOOLS__PG_BIN_DIR)")
        return found

    async def version(self, name: str = "pg_dump") -> str:
        proc = await asyncio.create_subprocess_exec(self.path(name), "--version",
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out.decode().strip()


def pipe() -> tuple[BinaryIO, int]:
    """pg_dump's stdout: a 1 MiB pipe (fewer wake-ups) read as a file, and its write end."""
    read_fd, write_fd = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return open(read_fd, "rb"), write_fd


async def whole_chunks(reader: BinaryIO) -> Chunks:
    """CHUNK-sized pieces of a pipe. Read as it comes, pg_dump's output arrives 8 KiB at a
    time, and every later stage pays per piece: 440,000 of them for a 3.4 GB dump."""
    while chunk := await asyncio.to_thread(reader.read, CHUNK):
        yield chunk


async def list_tables(conn: asyncpg.Connection) -> list[Table]:
    return [Table(r["schema"], r["name"], r["bytes"]) for r in await conn.fetch(TABLES_SQL)]


def select_tables(tables: Sequence[Table], wanted: Sequence[str]) -> list[Table]:
    """The tables named as `table` (schema public) or `schema.table`; all when none named."""
    if not wanted:
        return list(tables)
    by_name = {t.qualified: t for t in tables}
    chosen, missing = [], []
    for name in wanted:
        key = name if "." in name else f"public.{name}"
        if key in by_name:
            chosen.append(by_name[key])
        else:
            missing.append(name)
    if missing:
        raise SourceError(f"Tables not found: {', '.join(missing)}")
    return chosen


async def stderr_tail(stream: asyncio.StreamReader | None) -> str:
    if stream is None:
        return ""
    tail: collections.deque[bytes] = collections.deque()
    size = 0
    while line := await stream.readline():
        tail.append(line)
        size += len(line)
        while size > STDERR_TAIL:
            size -= len(tail.popleft())
    return b"".join(tail).decode(errors="replace").strip()


async def _exact_counts(conn: asyncpg.Connection, tables: list[Table]) -> dict[str, int]:
    return {t.qualified: int(await conn.fetchval(f"SELECT count(*) FROM {t.sql}"))
            for t in tables}


class PostgresSource:
    """One PostgreSQL database named by a source setting."""

    def __init__(self, uri: str, database: str | None = None,
                 tools: PgTools | None = None) -> None:
        self.conn = Connection.parse(uri, database)
        self.tools = tools or PgTools()

    def _dump_args(self, options: PgDumpOptions, snapshot: str,
                   tables: list[Table]) -> list[str]:
        args = [self.tools.path("pg_dump"), "--format=custom", "--compress=0",
                "--no-password", f"--snapshot={snapshot}", f"--dbname={self.conn.uri}"]
        if options.schema_only:
            args.append("--schema-only")
        if options.data_only:
            args.append("--data-only")
        args += [f"--table={table.sql}" for table in (tables if options.tables else [])]
        return args

    async def dump(self, options: PgDumpOptions, info: DumpInfo) -> Chunks:
        """The database as a `pg_dump -Fc -Z0` stream; `info` is complete when it ends."""
        if options.schema_only and options.data_only:
            raise SourceError("schemaOnly and dataOnly cannot both be set")
        holder = await self.conn.connect()
        proc: asyncio.subprocess.Process | None = None
        reader: BinaryIO | None = None
        errors: asyncio.Task[str] | None = None
        counter: asyncio.Task[dict[str, int]] | None = None
        env = contextlib.ExitStack()  # the secrets' service file lives as long as pg_dump
        try:
            # One exported snapshot: pg_dump and our row counts see the same data.
            await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = await holder.fetchval("SELECT pg_export_snapshot()")
            info.server_version = await holder.fetchval("SHOW server_version")
            info.tool_version = await self.tools.version("pg_dump")
            tables = select_tables(await list_tables(holder), options.tables)
            args = self._dump_args(options, snapshot, tables)
            reader, write_fd = pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *args, stdout=write_fd, stderr=asyncio.subprocess.PIPE,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=env.enter_context(self.conn.child_env()))
            finally:
                os.close(write_fd)  # pg_dump holds the only write end: its exit is our EOF
            errors = asyncio.create_task(stderr_tail(proc.stderr))
            if not options.schema_only:
                # One backend for the counts: parallel workers would take CPU from the
                # database server while pg_dump runs.
                await holder.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                counter = asyncio.create_task(_exact_counts(holder, tables))
            async with aclosing(whole_chunks(reader)) as chunks:
                async for chunk in chunks:
                    yield chunk
            code = await proc.wait()
            stderr = await errors
            if code != 0:
                raise SourceError(f"pg_dump exited with status {code}: "
                                  f"{stderr or 'no message'}")
            counts = await counter if counter else {}
            info.contents = [ContentEntry(name=t.qualified, count=counts.get(t.qualified),
                                          bytes=t.bytes) for t in tables]
        except asyncpg.PostgresError as exc:
            raise SourceError(f"PostgreSQL error during dump: {exc}") from exc
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            env.close()
            if reader is not None:
                # In a thread: a read left running by a cancelled consumer holds the file
                # until pg_dump's death ends it.
                await asyncio.to_thread(reader.close)
            if errors is not None:
                await asyncio.gather(errors, return_exceptions=True)
            if counter is not None and not counter.done():
                counter.cancel()
                await asyncio.gather(counter, return_exceptions=True)
            await holder.close()

    async def describe(self, database: str | None = None) -> dict[str, Any]:
        """Server version, existing tables and their exact row counts (for plans and checks)."""
        target = self.conn.for_database(database) if database else self.conn
        conn = await target.connect()
        try:
            return {
                "server_version": await conn.fetchval("SHOW server_version"),
                "counts": await _exact_counts(conn, await list_tables(conn)),
            }
        finally:
            await conn.close()

    async def server_version(self) -> str:
        conn = await self.conn.connect()
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    async def database_exists(self, database: str) -> bool:
        conn = await self.conn.connect()
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                            database))
        finally:
            await conn.close()

    async def create_database(self, database: str) -> None:
        conn = await self.conn.connect()
        try:
            await conn.execute(f"CREATE DATABASE {quote_ident(database)}")
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await conn.close()

    async def restore_file(self, path: Path, database: str, *, drop_existing: bool,
                           jobs: int = 2) -> None:
        """`pg_restore -j` from a spooled artifact into database (created when missing)."""
        if not await self.database_exists(database):
            await self.create_database(database)
        target = self.conn.for_database(database)
        args = [self.tools.path("pg_restore"), "--no-password", "--exit-on-error",
                "--no-owner", f"--jobs={max(1, jobs)}", f"--dbname={target.uri}"]
        if drop_existing:
            args += ["--clean", "--if-exists"]
        with target.child_env() as env:
            proc = await asyncio.create_subprocess_exec(
                *args, str(path), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, env=env)
            try:
                stderr = await stderr_tail(proc.stderr)
                code = await proc.wait()
            finally:
                if proc.returncode is None:  # cancelled: pg_restore must not outlive us
                    proc.kill()
                    await proc.wait()
        if code != 0:
            raise SourceError(f"pg_restore exited with status {code}: {stderr or 'no message'}")
