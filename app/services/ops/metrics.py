"""Prometheus metrics from the catalog: per source the last backup, failures, the last
verification and drill; jobs; storage per target; the next fire of each schedule.

Collected on scrape from a few small queries and kept for CACHE_SECONDS, so a scraper (or
several replicas' scrapers) cannot turn /metrics into catalog load.
"""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pymongo import DESCENDING

from app.config import Settings, StorageBackend
from app.models.backup import GOOD_STATUSES, Backup, BackupStatus
from app.models.common import utcnow
from app.models.content import ContentObject
from app.models.drill import DrillResult, RestoreDrill
from app.models.job import BackupJob, JobStatus
from app.models.schedule import Schedule
from app.models.verification import BackupVerification, VerificationResult
from app.scheduler.fires import next_run
from app.services.catalog.stats import configured_sources
from app.services.jobs.runner import error_text
from app.services.ops.space import free_bytes, largest_recent, spool_dir
from app.services.recoverability.health import last_drill
from app.services.storage import StorageTargets

log = structlog.get_logger(__name__)
CACHE_SECONDS = 10.0
COLLECT_TIMEOUT = 5.0
FAILURE_WINDOW_DAYS = 7
GOOD = [s.value for s in GOOD_STATUSES]


@dataclass
class Series:
    name: str
    help: str
    labels: list[str]
    samples: list[tuple[list[str], float]] = field(default_factory=list)

    def add(self, value: float | None, *labels: str) -> None:
        if value is not None:
            self.samples.append((list(labels), float(value)))


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class Snapshot(Collector):
    """One collection's series, rendered by prometheus_client."""

    def __init__(self, series: list[Series]) -> None:
        self.series = series

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for s in self.series:
            family = GaugeMetricFamily(s.name, s.help, labels=s.labels)
            for labels, value in s.samples:
                family.add_metric(labels, value)
            yield family


def _source_series() -> dict[str, Series]:
    specs = [
        ("backup_last_success_timestamp_seconds", "when the newest good backup finished"),
        ("backup_last_duration_seconds", "how long the newest good backup took"),
        ("backup_last_size_bytes", "stored bytes of the newest good backup"),
        ("backup_last_failure_timestamp_seconds", "when the newest failed backup started"),
        ("backup_failures_7d", f"failed backups in the last {FAILURE_WINDOW_DAYS} days"),
        ("verification_last_passed", "1 when the newest verification passed, else 0"),
        ("verification_last_timestamp_seconds", "when the newest verification ran"),
        ("drill_last_passed", "1 when the newest finished restore drill passed (the worse of a "
                              "source's newest dump and PITR drills), else 0"),
        ("drill_last_timestamp_seconds", "when the newest finished restore drill started"),
        ("drill_rto_seconds", "RTO (download + restore + checks) of the newest drill"),
        ("drill_rto_target_seconds", "the RTO target of the newest drill"),
    ]
    return {n: Series(f"backvault_{n}", h, ["source"]) for n, h in specs}


async def _newest(model: Any, query: dict[str, Any], sort: str) -> Any:
    found = await model.find(query).sort([(sort, DESCENDING)]).limit(1).to_list()
    return found[0] if found else None


async def _source(name: str, out: dict[str, Series], since: datetime) -> None:
    good: Backup | None = await _newest(Backup, {"source": name, "status": {"$in": GOOD}},
                                        "createdAt")
    if good is not None:
        duration = (good.duration_ms or 0) / 1000
        finished = good.created_at + timedelta(seconds=duration)
        out["backup_last_success_timestamp_seconds"].add(finished.timestamp(), name)
        out["backup_last_duration_seconds"].add(duration, name)
        out["backup_last_size_bytes"].add(good.stored_bytes, name)
    else:  # never backed up: as old as can be, so "missing" alerts fire
        out["backup_last_success_timestamp_seconds"].add(0, name)
    failed: Backup | None = await _newest(
        Backup, {"source": name, "status": BackupStatus.failed.value}, "createdAt")
    out["backup_last_failure_timestamp_seconds"].add(
        _ts(failed.created_at) if failed else 0, name)
    out["backup_failures_7d"].add(await Backup.find(
        {"source": name, "status": BackupStatus.failed.value,
         "createdAt": {"$gte": since}}).count(), name)
    verified: BackupVerification | None = await _newest(BackupVerification, {"source": name},
                                                        "at")
    if verified is not None:
        out["verification_last_passed"].add(
            verified.result is VerificationResult.passed, name)
        out["verification_last_timestamp_seconds"].add(_ts(verified.at), name)
    # The worst of the newest drill of each mode: a passing PITR drill does not hide a
    # failed dump drill (nor the reverse).
    drill: RestoreDrill | None = await last_drill(name)
    if drill is not None:
        out["drill_last_passed"].add(drill.result is DrillResult.passed, name)
        out["drill_last_timestamp_seconds"].add(_ts(drill.started_at), name)
        out["drill_rto_seconds"].add(drill.rto_s, name)
        out["drill_rto_target_seconds"].add(drill.rto_target_s, name)


def _target_name(targets: StorageTargets, target: str | None, backend: str | None) -> str:
    """The configured target a record names (older records name only their backend)."""
    if target:
        return target
    if backend in targets.stores or backend is None:
        return backend or targets.default_name
    kinds = [n for n, s in targets.stores.items() if s.name == backend]
    return targets.default_name if targets.default.name == backend or len(kinds) != 1 \
        else kinds[0]


async def _storage_used(targets: StorageTargets) -> dict[str, float]:
    """Stored bytes per target: backups (the trash too: still stored), copies, content."""
    used = dict.fromkeys(targets.names(), 0.0)

    def add(target: str | None, backend: str | None, size: Any) -> None:
        name = _target_name(targets, target, backend)
        used[name] = used.get(name, 0.0) + float(size or 0)

    async for doc in Backup.get_pymongo_collection().find(
            {}, {"storedBytes": 1, "storageTarget": 1, "storageBackend": 1, "copies": 1}):
        add(doc.get("storageTarget"), doc.get("storageBackend"), doc.get("storedBytes"))
        for copy in doc.get("copies") or []:
            add(copy.get("target"), None, copy.get("storedBytes"))
    rows = await ContentObject.get_pymongo_collection().aggregate([
        {"$group": {"_id": {"t": "$storageTarget", "b": "$storageBackend"},
                    "bytes": {"$sum": "$storedBytes"}}}])
    async for row in rows:
        add(row["_id"].get("t"), row["_id"].get("b"), row.get("bytes"))
    return used


async def _storage(settings: Settings, targets: StorageTargets) -> list[Series]:
    used = Series("backvault_storage_used_bytes", "bytes the catalog records per target",
                  ["target"])
    for name, size in (await _storage_used(targets)).items():
        used.add(size, name)
    free = Series("backvault_storage_free_bytes", "free bytes on a local target's file system",
                  ["target"])
    for target in settings.storage.target_list():
        if target.kind is StorageBackend.local and target.local_dir is not None:
            free.add(await asyncio.to_thread(free_bytes, target.local_dir), target.name)
    spool = Series("backvault_spool_free_bytes", "free bytes where restores spool", [])
    spool.add(await asyncio.to_thread(free_bytes, spool_dir(settings)))
    largest = await largest_recent()
    biggest = Series("backvault_backup_largest_recent_bytes",
                     "stored bytes of the largest good backup of the last 30 days", [])
    biggest.add(largest.stored)
    return [used, free, spool, biggest]


async def _jobs_and_schedules(now: datetime) -> list[Series]:
    running = Series("backvault_jobs_running", "jobs running now", [])
    running.add(await BackupJob.find({"status": JobStatus.running.value}).count())
    queued = Series("backvault_jobs_queued", "jobs waiting for a replica", [])
    queued.add(await BackupJob.find({"status": JobStatus.queued.value}).count())
    fires = Series("backvault_schedule_next_fire_timestamp_seconds",
                   "the next fire time of each enabled schedule", ["schedule", "kind"])
    async for schedule in Schedule.find({}):
        fires.add(_ts(next_run(schedule, now)), schedule.name, schedule.kind.value)
    return [running, queued, fires]


async def collect(settings: Settings, targets: StorageTargets) -> list[Series]:
    """Every catalog series, from a few small queries per configured source."""
    now = utcnow()
    per_source = _source_series()
    since = now - timedelta(days=FAILURE_WINDOW_DAYS)
    for name, _ in configured_sources(settings):
        await _source(name, per_source, since)
    return [*per_source.values(), *await _storage(settings, targets),
            *await _jobs_and_schedules(now)]


@dataclass
class CachedMetrics:
    at: float = float("-inf")
    body: bytes = b""
    up: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_CACHES: dict[str, CachedMetrics] = {}


async def catalog_metrics(settings: Settings, targets: StorageTargets) -> bytes:
    """The catalog series in the text exposition format, at most CACHE_SECONDS old.

    When the catalog does not answer in COLLECT_TIMEOUT, the last collection is served
    (the process metrics still are) and `backvault_catalog_up` says 0."""
    cache = _CACHES.setdefault(settings.catalog.database, CachedMetrics())
    async with cache.lock:  # one collection at a time; the others read its result
        if time.monotonic() - cache.at >= CACHE_SECONDS:
            try:
                async with asyncio.timeout(COLLECT_TIMEOUT):
                    series = await collect(settings, targets)
                cache.body, cache.at, cache.up = _render(series), time.monotonic(), True
            except Exception as exc:  # a scrape must answer even without the catalog
                log.warning("metrics collection failed", error=error_text(exc))
                # Not retried before CACHE_SECONDS: scrapes must not queue behind timeouts.
                cache.up, cache.at = False, time.monotonic()
        up = Series("backvault_catalog_up", "1 when the last collection succeeded", [])
        up.add(cache.up)
        return cache.body + _render([up])


def _render(series: list[Series]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(series))
    return generate_latest(registry)
