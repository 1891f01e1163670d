"""A source's password never appears in a child process's arguments (finding 9): every local
user can read /proc/<pid>/cmdline, so pg_dump and pg_restore get it through the environment."""

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings
from app.models.backup import BackupStatus
from app.models.requests import DatabaseBackupCreate
from app.services.databases.backup import back_up
from app.services.databases.base import DumpInfo
from app.services.databases.postgres.source import (
    Connection,
    PgDumpOptions,
    PgTools,
    PostgresSource,
)
from app.services.jobs.runner import Progress
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.data import create_big_pg_database
from tests.support.settings import PG_URI, RUN, WORK, pg_uri

PG_TOOLS = ("pg_dump", "pg_restore", "psql")
ROWS = 150_000  # about 15 MB of dump: a throttled backup keeps pg_dump alive for seconds


@dataclass
class SecretSource:
    role: str
    password: str
    database: str

    def uri(self) -> str:
        """A URI for this role with the password in a query parameter."""
        address = urlsplit(PG_URI).netloc.rpartition("@")[2]
        return (f"postgresql://{self.role}@{address}/{self.database}"
                f"?sslmode=disable&password={quote(self.password, safe='')}")


@pytest.fixture(scope="module")
async def secret_source(app: FastAPI) -> AsyncIterator[SecretSource]:
    """A database readable by a role of its own, with a password that appears nowhere else."""
    source = SecretSource(f"bv_argv_{RUN}", f"argv-{uuid.uuid4().hex}", f"bv_argv_{RUN}")
    admin = await asyncpg.connect(PG_URI)
    await admin.execute(f"DROP ROLE IF EXISTS {source.role}")
    await admin.execute(f"CREATE ROLE {source.role} LOGIN CREATEDB PASSWORD "
                        f"'{source.password}'")
    await create_big_pg_database(PG_URI, source.database, rows=ROWS)
    conn = await asyncpg.connect(pg_uri(source.database))
    await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {source.role}")
    await conn.close()
    yield source
    for row in await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                 f"bv_argv%{RUN}"):
        await admin.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    await admin.execute(f"DROP ROLE IF EXISTS {source.role}")
    await admin.close()


class ProcessWatch:
    """Reads the command line of every pg_dump/pg_restore/psql while a piece of work runs."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, str]] = {}  # pid -> (name, command line)

    def scan(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.seen:
                continue
            try:
                name = Path(f"/proc/{entry}/comm").read_text().strip()
                if name not in PG_TOOLS:
                    continue
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue  # ended between listing and reading
            if argv:
                self.seen[int(entry)] = (name, argv.decode(errors="replace"))

    async def during(self, work: "asyncio.Task[Any]") -> None:
        while not work.done():
            self.scan()
            await asyncio.sleep(0.01)

    def commands(self, name: str, mentioning: str) -> list[str]:
        return [argv for tool, argv in self.seen.values() if tool == name and mentioning in argv]


def _settings(settings: Settings, source: SecretSource) -> Settings:
    secret = SourceSettings(name="argv", kind=SourceKind("postgres"), uri=SecretStr(source.uri()))
    return settings.model_copy(update={
        "sources": [*settings.sources, secret],
        "limits": settings.limits.model_copy(update={"bandwidth_mbps": 2.0}),
    })


async def test_backup_password_in_query_stays_out_of_argv(
        settings: Settings, admin: Account, secret_source: SecretSource) -> None:
    slow = _settings(settings, secret_source)
    storage = LocalStorage(slow.storage.local_dir)
    watch = ProcessWatch()
    task = asyncio.create_task(back_up(
        slow, storage, Progress(), DatabaseBackupCreate(source="argv"), admin=admin.user.id))
    await watch.during(task)
    backup = task.result()

    dumps = watch.commands("pg_dump", secret_source.database)
    assert dumps, "pg_dump of the source was never seen running"
    for _, argv in watch.seen.values():
        assert secret_source.password not in argv
        assert "password=" not in argv
    # The password reached pg_dump another way: it authenticated and the backup is whole.
    assert backup.status is BackupStatus.completed
    counts = {c.name: c.count for c in backup.contents}
    assert counts == {"public.big": ROWS}


async def test_restore_password_stays_out_of_argv(
        settings: Settings, secret_source: SecretSource) -> None:
    tools = PgTools(settings.tools.pg_bin_dir)
    source = PostgresSource(secret_source.uri(), tools=tools)
    artifact = WORK / f"argv-{RUN}.dump"
    with artifact.open("wb") as out:
        async for chunk in source.dump(PgDumpOptions(), DumpInfo()):
            out.write(chunk)
    target = f"bv_argv_copy_{RUN}"
    watch = ProcessWatch()
    task = asyncio.create_task(
        source.restore_file(artifact, target, drop_existing=False, jobs=2))
    await watch.during(task)
    task.result()
    artifact.unlink()

    assert watch.commands("pg_restore", target), "pg_restore was never seen running"
    for _, argv in watch.seen.values():
        assert secret_source.password not in argv
    conn = await asyncpg.connect(pg_uri(target))
    assert await conn.fetchval("SELECT count(*) FROM big") == ROWS
    await conn.close()


async def test_secret_parameters_leave_the_argument_uri(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The service's own secrets are in its environment; the tools inherit none of them.
    monkeypatch.setenv("BACKUP_AUTH__JWT_SECRET", "service-jwt-secret")
    conn = Connection.parse("postgresql://u:p%40ss@db.example:5433/shop?sslmode=require"
                            "&sslpassword=key-pass&passfile=/run/pgpass&application_name=bv")
    assert conn.uri == ("postgresql://u@db.example:5433/shop?sslmode=require"
                        "&application_name=bv")
    assert conn.secrets == {"password": "p@ss", "sslpassword": "key-pass",
                            "passfile": "/run/pgpass"}
    assert "p%40ss" not in repr(conn)
    assert "key-pass" not in repr(conn)
    with conn.child_env() as env:
        assert env["PGPASSWORD"] == "p@ss"
        assert env["PGPASSFILE"] == "/run/pgpass"
        service = Path(env["PGSERVICEFILE"])
        assert stat.S_IMODE(service.stat().st_mode) == 0o600
        assert "sslpassword=key-pass" in service.read_text()
        assert not any(name.startswith("BACKUP_") for name in env)
    assert not service.exists()
    copy = conn.for_database("shop_copy")
    assert copy.uri.startswith("postgresql://u@db.example:5433/shop_copy?")
    assert copy.secrets == conn.secrets
