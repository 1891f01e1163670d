"""The items a content source names: a static list, a Kubo node's pins, or a field of a
MongoDB collection."""

from collections.abc import AsyncIterator
from typing import Any

from pymongo import AsyncMongoClient

from app.config import ContentSourceKind, ContentSourceSettings, Settings
from app.errors import InvalidInputError
from app.services.content import ipfs
from app.services.content.outbound import Outbound


def content_source_or_error(settings: Settings, name: str) -> ContentSourceSettings:
    """The configured content source of this name; 422 when unknown or content is off."""
    source = settings.content_source(name)
    if source is None:
        known = ", ".join(s.name for s in settings.content.sources) or "none"
        raise InvalidInputError(f"Unknown content source {name!r} (configured: {known})",
                                [{"field": "source", "message": "unknown content source"}])
    if not settings.content.enabled:
        raise InvalidInputError("Content backups are disabled (BACKUP_CONTENT__ENABLED)")
    return source


def _field_values(document: dict[str, Any], path: str) -> list[str]:
    value: Any = document
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


async def list_items(settings: Settings, source: ContentSourceSettings,
                     outbound: Outbound) -> AsyncIterator[tuple[str, str | None]]:
    """(reference, origin) of every item the source names."""
    if source.kind is ContentSourceKind.static:
        for item in source.items:
            yield item, None
    elif source.kind is ContentSourceKind.kubo_pins:
        assert source.kubo_api is not None
        for cid in await ipfs.kubo_pins(outbound, str(source.kubo_api)):
            yield cid, f"pin on {source.kubo_api}"
    else:
        mongo = settings.source(source.mongo_source or "")
        assert mongo is not None
        assert source.collection
        assert source.field
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo.uri.get_secret_value(), serverSelectionTimeoutMS=10_000)
        try:
            collection = client[mongo.database_name()][source.collection]
            async for document in collection.find(source.filter, {source.field: 1}):
                for value in _field_values(document, source.field):
                    yield value, f"{source.collection}/{document.get('_id')}"
        finally:
            await client.close()


def ipfs_addresses(references: list[tuple[str, str | None]]) -> list[str]:
    """The content addresses of the IPFS references that parse, each once, in order."""
    found = []
    for reference, _ in references:
        try:
            found.append(ipfs.address_of(ipfs.cid_of_reference(reference)))
        except InvalidInputError:
            pass  # reported when the item is backed up
    return list(dict.fromkeys(found))
