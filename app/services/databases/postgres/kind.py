"""PostgreSQL as a DatabaseKind: pg_dump custom-format archives, pg_restore."""

import asyncio
import shlex
import tempfile
from contextlib import aclosing
from pathlib import Path

from app.config import Settings, SourceSettings
from app.models.backup import BackupKind, ContentEntry
from app.models.requests import DatabaseBackupCreate
from app.services.artifacts.stages import Chunks, Digest
from app.services.databases.base import DelegatedChecks, DumpInfo, SourceError
from app.services.databases.postgres import checks as kind_checks
from app.services.databases.postgres.archive import check_pg_archive
from app.services.databases.postgres.facts import FACTS
from app.services.databases.postgres.source import PgDumpOptions, PgTools, PostgresSource


def _major(version: str | None) -> int | None:
    try:
        return int((version or "").split(".")[0].split()[0])
    except (ValueError, IndexError):
        return None


def _compare_tables(found: dict[str, int], expected: list[ContentEntry]) -> list[str]:
    """Row counts in the archive against the manifest's, naming each table that differs.

    A partitioned table's rows are dumped under its partitions, which the manifest does not
    list: tables absent from the archive must add up to the unlisted ones."""
    wanted = {c.name: c.count for c in expected if c.count is not None}
    problems = [f"table {name}: {found[name]} rows in the archive, {want} in the manifest"
                for name, want in wanted.items() if name in found and found[name] != want]
    missing = {n: c for n, c in wanted.items() if n not in found and c}
    unlisted = sum(c for n, c in found.items() if n not in wanted)
    if missing and sum(missing.values()) != unlisted:
        problems.append("no data in the archive for " + ", ".join(
            f"table {n} ({c} rows in the manifest)" for n, c in missing.items()))
    return problems


class PostgresKind(DelegatedChecks):
    checks = kind_checks
    backup_kind = BackupKind(FACTS.name)
    format_name = "pgdump"
    system_databases = frozenset({"postgres", "template0", "template1"})
    holds_catalog = False
    empty_is_new = False

    item_word = "table"

    def fold(self, name: str) -> str:
        return name

    def server(self, settings: Settings, source: SourceSettings,
               database: str | None = None) -> PostgresSource:
        """The source's server, connected to `database` (the source's own when None)."""
        return PostgresSource(source.uri.get_secret_value(), database or source.database,
                              PgTools(settings.tools.pg_bin_dir))

    def unsupported_options(self, body: DatabaseBackupCreate) -> list[str]:
        return [f for f, v in (("collections", body.collections),
                               ("allowPartial", body.allow_partial)) if v]

    def dump(self, settings: Settings, source: SourceSettings, body: DatabaseBackupCreate,
             info: DumpInfo, database: str | None) -> Chunks:
        return self.server(settings, source, database).dump(
            PgDumpOptions(schema_only=body.schema_only, data_only=body.data_only,
                          tables=body.tables), info)

    async def inspect_target(self, settings: Settings, source: SourceSettings,
                             database: str) -> tuple[bool, str | None, dict[str, int]]:
        pg = self.server(settings, source)
        if not await pg.database_exists(database):
            return False, await pg.server_version(), {}
        described = await pg.describe(database)
        return True, described["server_version"], described["counts"]

    def compatibility_warning(self, backup_version: str | None,
                              target_version: str | None) -> str | None:
        backup_major, target_major = _major(backup_version), _major(target_version)
        if backup_major and target_major and target_major < backup_major:
            return (f"the backup comes from PostgreSQL {backup_major}; the target runs "
                    f"{target_major}, and pg_restore into an older server may fail")
        return None

    async def restore(self, settings: Settings, source: SourceSettings, stream: Chunks, *,
                      digest: Digest, sha256: str | None, database: str,
                      drop_existing: bool) -> dict[str, int]:
        """pg_restore -j needs a seekable file: spool the plaintext, check it, restore it."""
        spool_dir = settings.storage.spool_dir or Path(tempfile.gettempdir())
        await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
        pg = self.server(settings, source)
        with tempfile.NamedTemporaryFile(dir=spool_dir, prefix="backvault-restore-",
                                         suffix=".pgdump") as spool:
            async with aclosing(stream) as chunks:
                async for chunk in chunks:
                    await asyncio.to_thread(spool.write, chunk)
            await asyncio.to_thread(spool.flush)
            if digest.hexdigest != sha256:
                raise SourceError("SHA-256 of the stored object differs from the catalog; "
                                  "nothing was restored")
            await pg.restore_file(Path(spool.name), database, drop_existing=drop_existing,
                                  jobs=max(1, settings.limits.max_concurrent_jobs))
        counts: dict[str, int] = (await pg.describe(database))["counts"]
        return counts

    async def check_archive(self, stream: Chunks, settings: Settings,
                            expected: list[ContentEntry]
                            ) -> tuple[list[ContentEntry], list[str]]:
        counts = await check_pg_archive(stream, PgTools(settings.tools.pg_bin_dir))
        return ([ContentEntry(name=t, count=n) for t, n in counts.items()],
                _compare_tables(counts, expected))

    def restore_command(self, steps: list[str], filename: str, database: str) -> str:
        connection = "-h HOST -p PORT -U USER"
        restore = (f"pg_restore --no-owner {connection} -d NEW_DB"
                   + ("" if steps else f" {shlex.quote(filename)}"))
        return f"createdb {connection} -T template0 NEW_DB && " + " | ".join([*steps, restore])


KIND = PostgresKind()
