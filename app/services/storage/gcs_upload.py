"""The chunks of one GCS resumable upload session, each retried and resumed as GCS documents
(https://cloud.google.com/storage/docs/performing-resumable-uploads, "Resume an
interrupted upload"): after a chunk's PUT fails transiently (connection lost, timeout, 408,
429, 5xx), an empty PUT with `Content-Range: bytes */<total or *>` asks what the session
holds; a 308's `Range: bytes=0-N` says GCS persisted N+1 bytes, and the chunk is sent again
from there. Only the chunk in hand can be resent (the stream before it is gone), so a
session holding less than the bytes before this chunk is a lost upload, as is one that
expired (404/410). 4xx answers such as 401/403 are never retried."""

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)

# (method, url, **httpx request arguments): a request with the account's token.
Request = Callable[..., Awaitable[httpx.Response]]


class GcsHttpError(Exception):
    """A response GCS answered with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class UploadLost(GcsHttpError):
    """The session cannot go on: it expired or was cancelled, it holds less than can be
    resent, or it made an object other than the one sent. Never transient."""


def transient_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def check(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    reason = response.reason_phrase
    try:
        errors = response.json().get("error", {}).get("errors") or [{}]
        reason = errors[0].get("reason") or reason
    except (ValueError, AttributeError):
        pass
    raise GcsHttpError(response.status_code, reason)


@dataclass(frozen=True)
class ChunkRetry:
    """How often a failed chunk is resumed: `attempts` failures after the first are
    tolerated, waiting base * 2^n (capped, with jitter) before each status query."""

    attempts: int = 4
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, failures: int) -> float:
        wait: float = min(self.max_seconds, self.base_seconds * 2.0 ** (failures - 1))
        return wait * random.uniform(0.8, 1.2)  # noqa: S311  # jitter, not a secret


class ResumableUpload:
    """One session's chunks, sent in order by `send`; `abandon` cleans up after a failure."""

    def __init__(self, request: Request, session: str, retry: ChunkRetry) -> None:
        self._request = request
        self._session = session  # a credential for this upload: never logged
        self._retry = retry
        self._stray: dict[str, Any] | None = None  # an object finished with the wrong bytes

    async def send(self, data: bytes, start: int, total: int | None) -> None:
        """Chunk `data` at byte `start` (total None: more follow) until GCS holds all of it,
        or, for the last chunk, until the object is complete."""
        offset, failures, query = start, 0, False
        while True:
            try:
                if query:
                    response = await self._put(b"", None, total)
                else:
                    response = await self._put(data[offset - start:], offset, total)
                if transient_status(response.status_code):
                    raise GcsHttpError(response.status_code, response.reason_phrase)
            except (httpx.TransportError, OSError, GcsHttpError) as exc:
                if isinstance(exc, GcsHttpError) and not transient_status(exc.status):
                    raise
                failures += 1
                if failures > self._retry.attempts:
                    raise
                await self._pause(failures, exc)
                query = True
                continue
            kept = self._held(response, start, len(data), total)
            if kept is None:
                return
            if kept == offset and not query:  # a chunk GCS took none of: a failure too
                failures += 1
                if failures > self._retry.attempts:
                    raise GcsHttpError(503, "upload made no progress")
                await self._pause(failures, GcsHttpError(308, "no bytes kept"))
            offset, query = kept, False

    async def _put(self, data: bytes, offset: int | None, total: int | None) -> httpx.Response:
        """A chunk at offset, or (offset None, no data) a status query."""
        span = "*" if offset is None or not data else f"{offset}-{offset + len(data) - 1}"
        headers = {"Content-Length": str(len(data)),
                   "Content-Range": f"bytes {span}/{'*' if total is None else total}"}
        return await self._request("PUT", self._session, content=_body(data), headers=headers)

    def _held(self, response: httpx.Response, start: int, length: int,
              total: int | None) -> int | None:
        """Where to go on from (None: this chunk is done), after a non-transient answer."""
        status = response.status_code
        if status in (200, 201):
            self._finished(response, total)
            return None
        if status in (404, 410):
            raise UploadLost(status, "the upload session expired or was cancelled")
        check(response)
        if status != 308:
            raise GcsHttpError(status, "unexpected answer to an upload chunk")
        kept = persisted(response)
        if not start <= kept <= start + length:
            raise UploadLost(status, f"the upload session holds {kept} bytes and this chunk "
                             f"covers {start} to {start + length}: it cannot resume")
        if kept == start + length and total is None:
            return None
        return kept

    def _finished(self, response: httpx.Response, total: int | None) -> None:
        """A 200/201 made the object: it must have exactly the bytes sent. (fake-gcs-server
        finishes an object on a status query, with whatever it holds.)"""
        try:
            item = response.json()
            size = int(item.get("size", -1))
        except (ValueError, AttributeError, TypeError):
            item, size = {}, -1
        if total is None or size != total:
            self._stray = item if isinstance(item, dict) else {}
            raise UploadLost(response.status_code,
                             f"the service finished the object at {size} bytes"
                             + (" before its last chunk" if total is None else f", not {total}"))

    async def _pause(self, failures: int, exc: BaseException) -> None:
        delay = self._retry.delay(failures)
        reason = str(exc) if isinstance(exc, GcsHttpError) else type(exc).__name__
        log.warning("gcs upload chunk failed, resuming", attempt=failures,
                    retry_in=round(delay, 2), error=reason)
        await asyncio.sleep(delay)

    async def abandon(self, object_url: str) -> None:
        """Cancel the session (GCS answers 499) and remove an object it finished wrongly;
        where the endpoint is gone, the session stays invisible and lapses in a week."""
        try:
            await self._request("DELETE", self._session)
            if self._stray is not None:
                generation = self._stray.get("generation")
                await self._request("DELETE", object_url, params=(
                    {"ifGenerationMatch": generation} if generation else None))
        except (httpx.HTTPError, GcsHttpError, OSError):
            pass


def persisted(response: httpx.Response) -> int:
    """How many bytes a resumable session holds, from a 308's `Range: bytes=0-N`."""
    found = response.headers.get("Range", "")
    return int(found.rsplit("-", 1)[1]) + 1 if found.startswith("bytes=0-") else 0


async def _body(data: bytes) -> AsyncGenerator[bytes, None]:
    """The bytes as a one-shot stream: httpx keeps each request (and a plain `content`
    with it) in a reference cycle until the collector runs; a finished generator lets
    the chunk go at once."""
    yield data
