"""Outbound HTTP for content: only to configured origins, redirects checked, sizes capped.

A redirect is followed only to an origin that is itself configured, so neither
another host nor a private address a gateway points at is ever fetched.
"""

import ipaddress
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from app.config import Settings
from app.errors import AppError
from app.services.artifacts.stages import SizeLimitExceeded

MAX_REDIRECTS = 3


class FetchRefused(AppError):
    status_code = 502
    code = "fetch_refused"


class FetchFailed(AppError):
    status_code = 502
    code = "fetch_failed"


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchRefused(f"Not an http(s) URL: {url[:200]}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname.lower(), port


def is_private(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")
    return address.is_private or address.is_loopback or address.is_link_local


class Outbound:
    """An httpx client that fetches from the allowed origins and nowhere else."""

    def __init__(self, allowed: list[str], timeout: float) -> None:
        self.allowed = {origin(url) for url in allowed}
        self.client = httpx.AsyncClient(follow_redirects=False, timeout=timeout,
                                        headers={"User-Agent": "backvault"})

    def allow(self, url: str) -> None:
        self.allowed.add(origin(url))

    def check(self, url: str) -> None:
        target = origin(url)
        if target not in self.allowed:
            kind = "a private address" if is_private(target[1]) else "a host"
            raise FetchRefused(f"Refused to fetch {url[:200]}: {kind} that is not a "
                               "configured gateway or hub")

    async def close(self) -> None:
        await self.client.aclose()

    @asynccontextmanager
    async def stream(self, method: str, url: str, **kwargs: Any
                     ) -> AsyncIterator[httpx.Response]:
        """A response with status 2xx after allowed redirects; anything else raises."""
        for _ in range(MAX_REDIRECTS + 1):
            self.check(url)
            async with self.client.stream(method, url, **kwargs) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code >= 400:
                    text = (await response.aread())[:300].decode("utf-8", "replace").strip()
                    raise FetchFailed(f"{url[:200]} answered {response.status_code}"
                                      + (f": {text}" if text else ""),
                                      {"status": response.status_code})
                yield response
                return
        raise FetchRefused(f"Too many redirects from {url[:200]}")


async def capped(response: httpx.Response, max_bytes: int, what: str
                 ) -> AsyncGenerator[bytes, None]:
    """The body, stopped as soon as it passes max_bytes (whatever Content-Length said)."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise SizeLimitExceeded(f"{what} is {declared} bytes, over the limit of {max_bytes}")
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise SizeLimitExceeded(f"{what} is larger than the limit of {max_bytes} bytes")
        yield chunk


def outbound_for(settings: Settings) -> Outbound:
    """A client allowed to reach the configured gateways, hubs and Kubo APIs only."""
    content = settings.content
    allowed = [str(u) for u in [*content.ipfs_gateways, *content.gaia_hubs]]
    allowed += [str(s.kubo_api) for s in content.sources if s.kubo_api]
    if content.kubo_api:
        allowed.append(str(content.kubo_api))
    return Outbound(allowed, content.timeout_seconds)
