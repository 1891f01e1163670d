"""MongoDB source: streaming dump into the mongodump archive format, and restore from it."""

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, cast

from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient, IndexModel
from pymongo.errors import PyMongoError

from app import __version__
from app.config import SourceSettings
from app.models.backup import ContentEntry
from app.services.artifacts.stages import Chunks
from app.services.databases.base import DumpInfo, SourceError
from app.services.databases.mongodb.archive import (
    ArchiveHeader,
    CollectionMeta,
    Documents,
    NamespaceEnd,
    count_documents,
    crc64,
    namespace_eof,
    prelude,
    read_archive,
    segment,
)

TOOL_VERSION = f"backvault {__version__}"
Client = AsyncMongoClient[dict[str, Any]]


def _client(uri: str) -> Client:
    return AsyncMongoClient(uri, serverSelectionTimeoutMS=10_000, appname="backvault")


def _index_spec(index: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in index.items() if k != "ns"}


@dataclass
class DumpOptions:
    collections: list[str] = field(default_factory=list)
    allow_partial: bool = False


class MongoSource:
    """One MongoDB database named by a source setting."""

    def __init__(self, source: SourceSettings) -> None:
        self.source = source
        self.database = source.database_name()

    async def server_version(self, client: Client) -> str:
        info = await client.admin.command("buildInfo")
        return str(info.get("version", "unknown"))

    async def collection_metas(self, client: Client,
                               selection: list[str]) -> list[CollectionMeta]:
        db = client[self.database]
        metas = []
        found = set()
        async for info in await db.list_collections():
            name = info["name"]
            if name.startswith("system.") or (selection and name not in selection):
                continue
            found.add(name)
            kind = info.get("type", "collection")
            indexes = [] if kind == "view" else [
                _index_spec(dict(i)) async for i in await db[name].list_indexes()]
            metadata: dict[str, Any] = {"indexes": indexes, "collectionName": name,
                                        "type": kind, "options": info.get("options", {})}
            if "info" in info and "uuid" in info["info"]:
                metadata["uuid"] = bytes(info["info"]["uuid"]).hex()
            metas.append(CollectionMeta(self.database, name, metadata,
                                        type="view" if kind == "view" else ""))
        missing = sorted(set(selection) - found)
        if missing:
            raise SourceError(f"Collections not found in {self.database}: {', '.join(missing)}")
        return sorted(metas, key=lambda m: m.collection)

    async def dump(self, options: DumpOptions, info: DumpInfo) -> Chunks:
        """The database as a mongodump archive stream, collection after collection."""
        client = _client(self.source.uri.get_secret_value())
        try:
            try:
                info.server_version = await self.server_version(client)
                info.tool_version = TOOL_VERSION
                metas = await self.collection_metas(client, options.collections)
            except PyMongoError as exc:
                raise SourceError(f"Cannot read {self.source.name}: {exc}") from exc
            yield prelude(info.server_version, TOOL_VERSION, metas)
            for meta in metas:
                if meta.type == "view":
                    continue
                async for piece in self._dump_collection(client, meta.collection, options, info):
                    yield piece
        finally:
            await client.close()

    async def _dump_collection(self, client: Client, name: str, options: DumpOptions,
                               info: DumpInfo) -> Chunks:
        crc = count = size = 0
        try:
            cursor = client[self.database][name].find_raw_batches({}, sort=[("_id", 1)])
            async for raw_batch in cursor:
                batch = cast(bytes, raw_batch)  # raw batches are concatenated BSON
                crc = crc64(batch, crc)
                count += count_documents(batch)
                size += len(batch)
                yield segment(self.database, name, batch)
        except PyMongoError as exc:
            info.errors[name] = str(exc)
            if not options.allow_partial:
                raise SourceError(f"Dumping collection {name} failed: {exc}") from exc
        yield namespace_eof(self.database, name, crc)
        info.contents.append(ContentEntry(name=name, count=count, bytes=size))


@dataclass
class RestoreReport:
    server_version: str = ""
    collections: dict[str, int] = field(default_factory=dict)
    verified_counts: dict[str, int] = field(default_factory=dict)


async def restore_archive(chunks: Chunks, uri: str, target_db: str, *, drop_existing: bool,
                          insert_batch: int = 1000) -> RestoreReport:
    """Load an archive into target_db with our reader; indexes are built after the data."""
    report = RestoreReport()
    client = _client(uri)
    indexes: dict[str, list[dict[str, Any]]] = {}
    try:
        db = client[target_db]
        events: AsyncGenerator[Any, None] = read_archive(chunks)
        async for event in events:
            if isinstance(event, ArchiveHeader):
                report.server_version = event.server_version
                await _prepare_collections(db, event.collections, drop_existing, indexes)
            elif isinstance(event, Documents):
                docs = [RawBSONDocument(raw) for raw in event.documents]
                for start in range(0, len(docs), insert_batch):
                    await db[event.collection].insert_many(docs[start:start + insert_batch],
                                                           ordered=True)
            elif isinstance(event, NamespaceEnd):
                report.collections[event.summary.collection] = event.summary.count
        for name, specs in indexes.items():
            models = [IndexModel(list(spec["key"].items()),
                                 **{k: v for k, v in spec.items() if k not in ("key", "v")})
                      for spec in specs if spec.get("name") != "_id_"]
            if models:
                await db[name].create_indexes(models)
        for name in report.collections:
            report.verified_counts[name] = await db[name].count_documents({})
    except PyMongoError as exc:
        raise SourceError(f"Restore into {target_db} failed: {exc}") from exc
    finally:
        await client.close()
    return report


async def _prepare_collections(db: Any, metas: list[CollectionMeta], drop_existing: bool,
                               indexes: dict[str, list[dict[str, Any]]]) -> None:
    existing = set(await db.list_collection_names())
    wanted = [m for m in metas if m.type != "view"]
    if not drop_existing:
        occupied = [m.collection for m in wanted if m.collection in existing
                    and await db[m.collection].estimated_document_count() > 0]
        if occupied:
            raise SourceError("Target collections are not empty (use dropExisting): "
                              + ", ".join(occupied))
    for meta in wanted:
        if drop_existing and meta.collection in existing:
            await db[meta.collection].drop()
        options = meta.metadata.get("options") or {}
        if meta.collection not in existing or drop_existing:
            await db.create_collection(meta.collection, **options)
        indexes[meta.collection] = list(meta.metadata.get("indexes") or [])
