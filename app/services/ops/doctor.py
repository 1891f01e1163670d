"""Deep health: probe everything a backup or a restore needs, each check bounded in time.

Storage targets (write, read back, delete a small object), free space, each database
source (reachable, server version, pg_dump at least the server's major), IPFS gateways,
Kubo and Gaia hubs, a catalog write, and that each notification URL parses.
"""

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import structlog

from app.config import Settings, SourceSettings
from app.config.common import without_userinfo
from app.models.backup import Backup
from app.models.common import utcnow
from app.models.doctor import (
    CHECK_ORDER,
    CheckStatus,
    DeepHealthReport,
    DoctorCheck,
    DoctorReport,
)
from app.models.stats import HealthReport, HealthStatus
from app.services.artifacts.stages import from_bytes
from app.services.catalog.stats import HEALTH_ORDER
from app.services.databases.kinds import kind_of
from app.services.jobs.runner import error_text
from app.services.ops.probes import probe_database
from app.services.ops.space import space_checks
from app.services.storage import Storage, StorageTargets

log = structlog.get_logger(__name__)
TIMEOUT_SECONDS = 10.0
PROBE_PREFIX = "doctor-probe/"
PROBE_BYTES = 4096


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


async def _bounded(area: str, name: str,
                   check: Callable[[], Awaitable[DoctorCheck]]) -> DoctorCheck:
    """A check that raised or hung is a failed check, never an error of the report."""
    try:
        return await asyncio.wait_for(check(), TIMEOUT_SECONDS)
    except TimeoutError:
        return DoctorCheck(area=area, name=name, status=CheckStatus.failed,
                           detail=f"no answer within {TIMEOUT_SECONDS:g} s")
    except Exception as exc:
        return DoctorCheck(area=area, name=name, status=CheckStatus.failed,
                           detail=error_text(exc)[:500])


async def storage_check(name: str, storage: Storage) -> DoctorCheck:
    """Write, read back and delete a small probe object; the latency of the round trip."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    data = os.urandom(PROBE_BYTES)
    started = time.perf_counter()
    try:
        await storage.put(key, from_bytes(data))
        read = b"".join([chunk async for chunk in storage.get(key)])
    finally:
        await storage.delete(key)
    if read != data:
        return DoctorCheck(area="storage", name=name, status=CheckStatus.failed,
                           detail="the probe object read back differs from what was written")
    return DoctorCheck(area="storage", name=name, status=CheckStatus.ok,
                       latency_ms=_ms(started), facts={"kind": storage.name})


async def source_check(settings: Settings, source: SourceSettings) -> DoctorCheck:
    """Reachable and its version, and its kind's dump tool can serve it (pg_dump at least
    the server's major)."""
    probe = await probe_database(source)
    if not probe.reachable:
        return DoctorCheck(area="source", name=source.name, status=CheckStatus.failed,
                           detail=f"not reachable: {probe.error}")
    facts: dict[str, Any] = {"kind": source.kind.value, "serverVersion": probe.server_version}
    tool, problem = await kind_of(source.kind).tool_problem(settings, probe.server_version)
    facts.update(tool)
    status = CheckStatus.failed if problem else CheckStatus.ok
    detail = problem or f"server {probe.server_version}"
    return DoctorCheck(area="source", name=source.name, status=status,
                       latency_ms=probe.latency_ms, facts=facts, detail=detail)


async def http_check(area: str, name: str, url: str, kubo: bool = False) -> DoctorCheck:
    """An endpoint answers (Kubo: its RPC API answers `version`); no 5xx."""
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False) as http:
        if kubo:
            answer = await http.post(url.rstrip("/") + "/api/v0/version")
        else:
            answer = await http.get(url.rstrip("/") + ("/hub_info" if area == "gaia" else "/"))
    if answer.status_code >= 500 or (kubo and answer.status_code != 200):
        return DoctorCheck(area=area, name=name, status=CheckStatus.failed,
                           detail=f"answered HTTP {answer.status_code}")
    facts = {"httpStatus": answer.status_code}
    if kubo:
        facts["version"] = answer.json().get("Version")
    return DoctorCheck(area=area, name=name, status=CheckStatus.ok, latency_ms=_ms(started),
                       facts=facts)


async def catalog_check() -> DoctorCheck:
    """Insert, read and delete a document in the catalog's database."""
    collection = Backup.get_pymongo_collection().database["health_probes"]
    started = time.perf_counter()
    marker = uuid.uuid4().hex
    await collection.insert_one({"_id": marker, "at": utcnow()})
    found = await collection.find_one({"_id": marker})
    await collection.delete_one({"_id": marker})
    if found is None:
        return DoctorCheck(area="catalog", name="write", status=CheckStatus.failed,
                           detail="a document written could not be read back")
    return DoctorCheck(area="catalog", name="write", status=CheckStatus.ok,
                       latency_ms=_ms(started))


def _parses(url: str) -> bool:
    import apprise  # loaded only where notifications are checked or sent

    return bool(apprise.Apprise().add(url))


async def notification_checks(settings: Settings) -> list[DoctorCheck]:
    """Each URL apprise can read; the URL itself (credentials) is never shown."""
    checks = []
    for index, url in enumerate(settings.notifications.urls, start=1):
        scheme = url.get_secret_value().split(":", 1)[0][:20]
        ok = await asyncio.to_thread(_parses, url.get_secret_value())
        checks.append(DoctorCheck(
            area="notifications", name=f"url {index} ({scheme})",
            status=CheckStatus.ok if ok else CheckStatus.failed,
            detail=None if ok else "apprise cannot read this URL: nothing is sent to it"))
    return checks


def _endpoint_checks(settings: Settings) -> list[Awaitable[DoctorCheck]]:
    content = settings.content
    endpoints = [("ipfs", str(u).rstrip("/")) for u in content.ipfs_gateways]
    endpoints += [("gaia", str(u).rstrip("/")) for u in content.gaia_hubs]
    # Checks are named by the URL without its user-info (a password sent as basic auth).
    work: list[Awaitable[DoctorCheck]] = [
        _bounded(area, without_userinfo(url),
                 partial(http_check, area, without_userinfo(url), url))
        for area, url in endpoints]
    kubos = {str(u).rstrip("/") for u in [content.kubo_api,
                                          *(s.kubo_api for s in content.sources)] if u}
    work += [_bounded("kubo", without_userinfo(u),
                      partial(http_check, "kubo", without_userinfo(u), u, kubo=True))
             for u in sorted(kubos)]
    return work


async def run_doctor(settings: Settings, targets: StorageTargets) -> DoctorReport:
    """Every deep check, side by side; the report's status is the worst of them."""
    work: list[Awaitable[DoctorCheck]] = [
        _bounded("storage", name, partial(storage_check, name, targets.named(name)))
        for name in targets.names()]
    work += [_bounded("source", s.name, partial(source_check, settings, s))
             for s in settings.all_sources() if s.enabled]
    work += _endpoint_checks(settings)
    work.append(_bounded("catalog", "write", catalog_check))
    checks = list(await asyncio.gather(*work))
    checks += await space_checks(settings, targets)
    checks += await notification_checks(settings)
    status = max((c.status for c in checks), key=CHECK_ORDER.index, default=CheckStatus.ok)
    for check in checks:
        if check.status is not CheckStatus.ok:
            log.warning("deep health check not ok", area=check.area, name=check.name,
                        status=check.status.value, detail=check.detail)
    return DoctorReport(status=status, checks=checks, timestamp=utcnow())


HEALTH_OF = {CheckStatus.ok: HealthStatus.healthy, CheckStatus.warning: HealthStatus.warning,
             CheckStatus.failed: HealthStatus.critical}


def with_issues(report: HealthReport, issues: list[str], status: HealthStatus) -> HealthReport:
    """The report with more issues and at least this status."""
    report.issues = [*report.issues, *issues]
    report.status = max(report.status, status, key=HEALTH_ORDER.index)
    return report


async def deep_health(settings: Settings, targets: StorageTargets,
                      report: HealthReport) -> DeepHealthReport:
    """The health rules' report with every deep check run and its issues added."""
    doctor = await run_doctor(settings, targets)
    issues = [c.issue for c in doctor.checks if c.status is not CheckStatus.ok]
    merged = with_issues(report, issues, HEALTH_OF[doctor.status])
    return DeepHealthReport(**merged.model_dump(), deep=doctor)
