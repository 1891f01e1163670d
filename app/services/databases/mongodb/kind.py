"""MongoDB as a DatabaseKind: our own mongodump-archive writer and reader."""

import shlex
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.config import Settings, SourceSettings
from app.models.backup import BackupKind, ContentEntry
from app.models.requests import DatabaseBackupCreate
from app.services.artifacts.stages import Chunks, Digest
from app.services.databases.base import DelegatedChecks, DumpInfo, SourceError
from app.services.databases.mongodb import checks as kind_checks
from app.services.databases.mongodb.archive import NamespaceEnd, read_archive
from app.services.databases.mongodb.facts import FACTS
from app.services.databases.mongodb.source import DumpOptions, MongoSource, restore_archive


class MongoKind(DelegatedChecks):
    checks = kind_checks
    backup_kind = BackupKind(FACTS.name)
    format_name = "mongoarchive"
    system_databases = frozenset({"admin", "local", "config"})
    holds_catalog = True
    empty_is_new = True

    item_word = "collection"

    def fold(self, name: str) -> str:
        # MongoDB refuses names differing only in case, so compare them folded.
        return name.lower()

    def unsupported_options(self, body: DatabaseBackupCreate) -> list[str]:
        return [f for f, v in (("schemaOnly", body.schema_only), ("dataOnly", body.data_only),
                               ("tables", body.tables)) if v]

    def dump(self, settings: Settings, source: SourceSettings, body: DatabaseBackupCreate,
             info: DumpInfo, database: str | None) -> Chunks:
        mongo = MongoSource(source if database is None else
                            source.model_copy(update={"database": database}))
        return mongo.dump(DumpOptions(collections=body.collections,
                                      allow_partial=body.allow_partial), info)

    async def inspect_target(self, settings: Settings, source: SourceSettings,
                             database: str) -> tuple[bool, str | None, dict[str, int]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            source.uri.get_secret_value(), serverSelectionTimeoutMS=10_000)
        try:
            version = str((await client.admin.command("buildInfo")).get("version"))
            names = [n for n in await client[database].list_collection_names()
                     if not n.startswith("system.")]
            counts = {n: await client[database][n].count_documents({}) for n in names}
            return bool(names), version, counts
        except PyMongoError as exc:
            raise SourceError(f"Cannot inspect {database}: {exc}") from exc
        finally:
            await client.close()

    def compatibility_warning(self, backup_version: str | None,
                              target_version: str | None) -> str | None:
        return None

    async def restore(self, settings: Settings, source: SourceSettings, stream: Chunks, *,
                      digest: Digest, sha256: str | None, database: str,
                      drop_existing: bool) -> dict[str, int]:
        report = await restore_archive(stream, source.uri.get_secret_value(), database,
                                       drop_existing=drop_existing)
        if digest.hexdigest != sha256:
            raise SourceError("SHA-256 of the stored object differs from the catalog")
        return report.verified_counts

    async def check_archive(self, stream: Chunks, settings: Settings,
                            expected: list[ContentEntry]
                            ) -> tuple[list[ContentEntry], list[str]]:
        found: list[ContentEntry] = []
        async for event in read_archive(stream):
            if isinstance(event, NamespaceEnd):
                found.append(ContentEntry(name=event.summary.collection,
                                          count=event.summary.count, bytes=event.summary.bytes))
        wanted = {c.name: c.count for c in expected}
        got = {c.name: c.count for c in found}
        if wanted and wanted != got:
            return found, [f"archive counts {got} differ from the catalog's {wanted}"]
        return found, []

    def restore_command(self, steps: list[str], filename: str, database: str) -> str:
        archive = "--archive" if steps else f"--archive={shlex.quote(filename)}"
        return " | ".join([*steps, f"mongorestore --uri='mongodb://USER@HOST:PORT/' {archive} "
                                   f"--nsFrom={shlex.quote(database + '.*')} --nsTo='NEW_DB.*'"])


KIND = MongoKind()
