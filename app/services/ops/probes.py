"""Reachability probes of the configured sources: one call per source, a small result.

Each probe is bounded by a timeout, measures its latency, and never lets a credential
into its error text (the console shows it and the deep health check may log it).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from app.config import ContentSourceSettings, ContentType, Settings, SourceSettings
from app.errors import NotFoundError
from app.services.databases.kinds import kind_of

TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool
    server_version: str | None = None
    latency_ms: float | None = None
    error: str | None = None


def _secrets_of(uri: str) -> list[str]:
    """The userinfo and its password, decoded and not, and secret query values."""
    parts = urlsplit(uri)
    userinfo = parts.netloc.rpartition("@")[0]
    password = userinfo.partition(":")[2]
    found = [userinfo, password, unquote(password)]
    found += [v for k, _, v in (p.partition("=") for p in parts.query.split("&"))
              if "pass" in k.lower() or "secret" in k.lower() or "key" in k.lower()]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def scrub(text: str, uri: str) -> str:
    """`text` with every credential of `uri` replaced by ***."""
    for secret in _secrets_of(uri):
        text = text.replace(secret, "***")
    return text


async def _timed(check: Callable[[], Awaitable[str | None]], uri: str,
                 timeout: float) -> ProbeResult:
    started = time.perf_counter()
    try:
        version = await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return ProbeResult(False, error=f"no answer within {timeout:g} s")
    except Exception as exc:  # any failure is the probe's answer, not ours
        text = str(exc) or type(exc).__name__
        return ProbeResult(False, error=scrub(f"{type(exc).__name__}: {text}", uri)[:500])
    return ProbeResult(True, server_version=version,
                       latency_ms=round((time.perf_counter() - started) * 1000, 1))


async def probe_database(source: SourceSettings, timeout: float = TIMEOUT_SECONDS
                         ) -> ProbeResult:
    """Connect and ask the server's version, the way its kind of database does."""
    kind = kind_of(source.kind)
    return await _timed(lambda: kind.server_version(source, timeout),
                        source.uri.get_secret_value(), timeout)


def content_endpoint(settings: Settings, source: ContentSourceSettings) -> tuple[str, bool]:
    """What a content source is fetched from: its Kubo API (True), else the first gateway
    or Gaia hub (False). Empty when none is configured."""
    if source.kubo_api is not None:
        return str(source.kubo_api), True
    urls = (settings.content.ipfs_gateways if source.type is ContentType.ipfs
            else settings.content.gaia_hubs)
    return (str(urls[0]), False) if urls else ("", False)


async def probe_content(settings: Settings, source: ContentSourceSettings,
                        timeout: float = TIMEOUT_SECONDS) -> ProbeResult:
    """Kubo: its RPC API answers `version`. A gateway or hub: it answers HTTP at all."""
    url, kubo = content_endpoint(settings, source)
    if not url:
        return ProbeResult(False, error=f"no {source.type.value} gateway or hub is configured")

    async def check() -> str | None:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            if kubo:
                answer = await http.post(url.rstrip("/") + "/api/v0/version")
                answer.raise_for_status()
                return f"kubo {answer.json().get('Version')}"
            answer = await http.get(url)
            if answer.status_code >= 500:
                answer.raise_for_status()
            server = answer.headers.get("server")
            return str(server) if server else None

    return await _timed(check, url, timeout)


async def probe_source(settings: Settings, name: str,
                       timeout: float = TIMEOUT_SECONDS) -> tuple[str, ProbeResult]:
    """The kind and probe result of a configured source; NotFoundError when unknown."""
    database = settings.source(name)
    if database is not None:
        return database.kind.value, await probe_database(database, timeout)
    content = settings.content_source(name)
    if content is not None:
        return content.kind.value, await probe_content(settings, content, timeout)
    raise NotFoundError(f"Source {name!r} is not configured", {"source": name})
