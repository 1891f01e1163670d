"""The configured sources as the console lists them: where they are, never credentials."""

from datetime import datetime

from app.config import Settings
from app.config.common import host_port
from app.models.backup import Backup
from app.models.common import utcnow
from app.models.dashboard import LastGoodBackup, SourceOut, SourceTestResult
from app.services.catalog.retention import GOOD_FILTER
from app.services.catalog.upcoming import next_run_per_source
from app.services.ops.probes import content_endpoint, probe_source


async def last_good_per_source() -> dict[str, LastGoodBackup]:
    """Each source's newest good backup, from one query (no per-source scans)."""
    newest: dict[str, LastGoodBackup] = {}
    async for doc in Backup.get_pymongo_collection().find(GOOD_FILTER,
                                                          {"source": 1, "createdAt": 1}):
        name, created = doc.get("source"), doc.get("createdAt")
        if name is None or created is None:
            continue
        if name not in newest or created > newest[name].created_at:
            newest[name] = LastGoodBackup(id=doc["_id"], created_at=created)
    return newest


async def sources_overview(settings: Settings, now: datetime | None = None) -> list[SourceOut]:
    """Each database and content source: kind, host and port, database, enabled, where it
    is managed, its last good backup and next scheduled run."""
    nxt = await next_run_per_source(settings, now or utcnow())
    last_good = await last_good_per_source()
    from_env = settings.environment_source_names()
    out = []
    for db in settings.all_sources():
        host, port = host_port(db.uri.get_secret_value())
        out.append(SourceOut(
            name=db.name, kind=db.kind.value, category="database", host=host, port=port,
            database=db.database_name(), enabled=db.enabled,
            managed="environment" if db.name in from_env else "catalog",
            last_good_backup=last_good.get(db.name), next_run=nxt.get(db.name)))
    for content in settings.content.sources:
        url, _ = content_endpoint(settings, content)
        host, port = host_port(url) if url else (None, None)
        out.append(SourceOut(
            name=content.name, kind=content.kind.value, category="content", host=host,
            port=port, database=None, content_type=content.type.value,
            enabled=settings.content.enabled, managed="environment",
            last_good_backup=last_good.get(content.name), next_run=nxt.get(content.name)))
    return out


async def check_source(settings: Settings, name: str) -> SourceTestResult:
    """Probe one configured source (NotFoundError when unknown)."""
    kind, result = await probe_source(settings, name)
    return SourceTestResult(name=name, kind=kind, reachable=result.reachable,
                            server_version=result.server_version,
                            latency_ms=result.latency_ms, error=result.error,
                            tested_at=utcnow())
