"""Database sources an admin adds at runtime: stored with the URI sealed to the source
store's key, read back by every replica (`refresh`) so that no restart is needed."""

import base64
from typing import Any

import pyrage
import structlog
from pydantic import SecretStr, ValidationError
from pymongo.errors import DuplicateKeyError

from app.config import Settings, SourceSettings
from app.config.common import host_port
from app.config.managed import set_managed_sources
from app.errors import (
    AppError,
    ConfirmationRequiredError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from app.models.common import utcnow
from app.models.managed_source import (
    ManagedSource,
    ManagedSourceCreate,
    ManagedSourceOut,
    ManagedSourceUpdate,
)
from app.models.schedule import Schedule
from app.services.databases.backup import check_copy_targets

log = structlog.get_logger(__name__)


class SourceStoreDisabledError(AppError):
    status_code = 409
    code = "source_store_disabled"


def _identity(settings: Settings) -> pyrage.x25519.Identity:
    identity = settings.source_store.identity()
    if identity is None:
        raise SourceStoreDisabledError(
            "Sources cannot be added at runtime: BACKUP_SOURCE_STORE__KEY is not set")
    return identity


def seal(settings: Settings, uri: SecretStr) -> str:
    recipient = _identity(settings).to_public()
    return base64.b64encode(pyrage.encrypt(uri.get_secret_value().encode(), [recipient])
                            ).decode()


def unseal(identity: pyrage.x25519.Identity, sealed: str) -> SecretStr:
    return SecretStr(pyrage.decrypt(base64.b64decode(sealed), [identity]).decode())


def _source(doc: ManagedSource, uri: SecretStr) -> SourceSettings:
    return SourceSettings(name=doc.name, kind=doc.kind, uri=uri, database=doc.database,
                          enabled=doc.enabled, copy_targets=doc.copy_targets)


async def refresh(settings: Settings) -> int:
    """Read every stored source into this process; one that cannot be opened or is no
    longer valid is logged and left out, never stops the others."""
    identity = settings.source_store.identity()
    found: list[SourceSettings] = []
    if identity is not None:
        async for doc in ManagedSource.find_all():
            try:
                found.append(_source(doc, unseal(identity, doc.sealed_uri)))
            except (pyrage.DecryptError, ValueError, ValidationError) as exc:
                log.error("stored source skipped", source=doc.name,
                          reason=type(exc).__name__)
    set_managed_sources(settings.catalog.database, found)
    return len(found)


def _checked(settings: Settings, doc: ManagedSource, uri: SecretStr) -> None:
    """The same rules as an environment source: kind and URI scheme, copy targets."""
    try:
        _source(doc, uri)
    except ValidationError as exc:
        raise InvalidInputError("The source is not valid", [
            {"field": ".".join(map(str, e["loc"])) or "uri", "message": e["msg"]}
            for e in exc.errors(include_input=False, include_url=False)]) from None
    check_copy_targets(settings, doc.copy_targets)


def _read_only(settings: Settings, name: str) -> None:
    if name in settings.environment_source_names():
        raise ConflictError(f"Source {name!r} comes from the environment and is read-only",
                            {"source": name, "managed": "environment"})


async def _stored(name: str) -> ManagedSource:
    doc = await ManagedSource.find_one({"name": name})
    if doc is None:
        raise NotFoundError(f"No source added at runtime is named {name!r}")
    return doc


def out(doc: ManagedSource, settings: Settings) -> ManagedSourceOut:
    source = settings.source(doc.name)
    host, port = host_port(source.uri.get_secret_value()) if source else (None, None)
    return ManagedSourceOut(
        name=doc.name, kind=doc.kind, host=host, port=port,
        database=source.database_name() if source else (doc.database or ""),
        enabled=doc.enabled, copy_targets=doc.copy_targets, created_by=doc.created_by,
        created_at=doc.created_at, updated_at=doc.updated_at)


async def list_sources(settings: Settings) -> list[ManagedSourceOut]:
    return [out(doc, settings) async for doc in ManagedSource.find_all().sort("name")]


async def create(settings: Settings, body: ManagedSourceCreate, username: str
                 ) -> ManagedSourceOut:
    _read_only(settings, body.name)
    doc = ManagedSource(name=body.name, kind=body.kind, sealed_uri="",
                        database=body.database, enabled=body.enabled,
                        copy_targets=body.copy_targets, created_by=username)
    _checked(settings, doc, body.uri)
    doc.sealed_uri = seal(settings, body.uri)
    try:
        await doc.insert()
    except DuplicateKeyError:  # the name is taken (the unique index decides, races too)
        raise ConflictError(f"A source named {body.name!r} exists",
                            {"source": body.name}) from None
    await refresh(settings)
    log.info("source added", source=doc.name, kind=doc.kind.value, by=username)
    return out(doc, settings)


async def update(settings: Settings, name: str, body: ManagedSourceUpdate) -> ManagedSourceOut:
    _read_only(settings, name)
    doc = await _stored(name)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"uri"})
    uri = body.uri  # never an explicit null (refused by the model)
    for field, value in changes.items():
        setattr(doc, field, value)
    if uri is not None:
        doc.sealed_uri = seal(settings, uri)
    _checked(settings, doc, uri or unseal(_identity(settings), doc.sealed_uri))
    doc.updated_at = utcnow()
    await doc.save()
    await refresh(settings)
    return out(doc, settings)


async def delete(settings: Settings, name: str, confirm: str | None) -> None:
    """Remove a runtime source; its backups stay in the catalog and storage."""
    _read_only(settings, name)
    doc = await _stored(name)
    if confirm != name:
        raise ConfirmationRequiredError(f"Deleting source {name!r} needs confirm={name}",
                                        {"confirm": name})
    users = [str(s.id) async for s in Schedule.find({"sources": name})]
    if users:
        raise ConflictError(f"Source {name!r} is named by schedules; change them first",
                            {"schedules": users})
    await doc.delete()
    await refresh(settings)
