"""Google Cloud Storage through its JSON API on httpx: resumable uploads sent chunk by
chunk as the stream comes (one chunk uploading, one filling), so the object exists only
once the last chunk lands. A chunk that fails transiently is resumed where GCS left it
(gcs_upload); an upload that still fails has its session cancelled. Service-account keys
are exchanged for access tokens (RS256 JWT bearer grant)."""

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import jwt

from app.config import Settings, StorageTargetSettings
from app.config.cloud_storage import service_account
from app.services.artifacts.stages import CHUNK, Chunks
from app.services.storage.base import (
    ErrorMap,
    KeyPrefix,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_prefix,
    status_reason,
)
from app.services.storage.gcs_upload import (
    ChunkRetry,
    GcsHttpError,
    ResumableUpload,
    UploadLost,
)
from app.services.storage.gcs_upload import check as _check

GCS_ENDPOINT = "https://storage.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
CHUNK_SIZE = 8 * 1024 * 1024  # a multiple of 256 KiB, as GCS requires for every chunk but the last
TIMEOUT = httpx.Timeout(120, connect=10)


class GcsStorage(KeyPrefix):
    name = "gcs"

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 credentials: dict[str, Any] | None = None,
                 chunk_size: int = CHUNK_SIZE, retry: ChunkRetry | None = None,
                 timeout: httpx.Timeout = TIMEOUT) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = (endpoint_url or GCS_ENDPOINT).rstrip("/")
        self.chunk_size = chunk_size
        self.retry = retry or ChunkRetry()
        self.timeout = timeout
        self._credentials = credentials
        self._token: tuple[str, float] | None = None
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_target(cls, s: StorageTargetSettings, settings: Settings) -> "GcsStorage":
        if not s.gcs_bucket:
            raise StorageError("storage target needs gcs_bucket")
        credentials = (service_account(s.gcs_credentials_json.get_secret_value())
                       if s.gcs_credentials_json else None)
        # A failed chunk is resumed as often as any transient storage call is repeated.
        retry = ChunkRetry(settings.storage.retries, settings.storage.retry_base_seconds)
        return cls(s.gcs_bucket, prefix=s.gcs_prefix, credentials=credentials, retry=retry,
                   endpoint_url=str(s.gcs_endpoint_url) if s.gcs_endpoint_url else None)


    def _object_url(self, name: str) -> str:
        return f"{self.endpoint}/storage/v1/b/{self.bucket}/o/{quote(name, safe='')}"

    def describe(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._full(key)}"

    async def _headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """An access token for the service account (cached until shortly before it lapses);
        none without credentials (an emulator)."""
        if self._credentials is None:
            return {}
        async with self._token_lock:
            if self._token is None or self._token[1] < time.time() + 60:
                self._token = await self._fetch_token(http)
        return {"Authorization": f"Bearer {self._token[0]}"}

    async def _fetch_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        assert self._credentials is not None
        now = int(time.time())
        info = self._credentials
        assertion = jwt.encode(
            {"iss": info["client_email"], "scope": SCOPE, "aud": info["token_uri"],
             "iat": now, "exp": now + 3600},
            info["private_key"], algorithm="RS256",
            headers={"kid": info["private_key_id"]} if info.get("private_key_id") else None)
        response = await http.post(info["token_uri"], data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": assertion})
        if response.status_code != 200:
            reason = _json_field(response, "error") or response.reason_phrase
            raise GcsHttpError(401 if response.status_code in (400, 401) else
                               response.status_code,
                               f"service account token refused ({reason})")
        body = response.json()
        return str(body["access_token"]), time.time() + float(body.get("expires_in", 3600))

    async def _request(self, http: httpx.AsyncClient, method: str, url: str,
                       **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **await self._headers(http)}
        response = await http.request(method, url, headers=headers, **kwargs)
        return response

    async def prepare(self) -> None:
        with mapped_errors(f"Cannot reach bucket {self.bucket}"):
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                found = await self._request(http, "GET",
                                            f"{self.endpoint}/storage/v1/b/{self.bucket}")
                if found.status_code != 404:
                    _check(found)
                    return
                project = (self._credentials or {}).get("project_id")
                made = await self._request(http, "POST", f"{self.endpoint}/storage/v1/b",
                                           params={"project": project} if project else None,
                                           json={"name": self.bucket})
                if made.status_code != 409:  # made meanwhile by another replica
                    _check(made)

    async def put(self, key: str, chunks: Chunks) -> int:
        name = self._full(key)
        upload_url = f"{self.endpoint}/upload/storage/v1/b/{self.bucket}/o"
        upload: ResumableUpload | None = None
        in_flight: asyncio.Task[None] | None = None
        sent = 0
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            def request(method: str, url: str, **kwargs: Any) -> Awaitable[httpx.Response]:
                return self._request(http, method, url, **kwargs)
            try:
                async with aclosing(_full_chunks(chunks, self.chunk_size)) as source:
                    async for data, last in source:
                        if upload is None and last:  # small: one request, atomic
                            response = await request(
                                "POST", upload_url, content=data,
                                params={"uploadType": "media", "name": name},
                                headers={"Content-Type": "application/octet-stream"})
                            _check(response)
                            return len(data)
                        if upload is None:
                            upload = ResumableUpload(
                                request, await self._start(http, upload_url, name), self.retry)
                        if in_flight is not None:
                            await in_flight  # at most one chunk uploading, one filling
                            in_flight = None
                        if last:
                            await upload.send(data, sent, sent + len(data))
                            return sent + len(data)
                        in_flight = asyncio.create_task(upload.send(data, sent, None))
                        sent += len(data)
                raise AssertionError("unreachable: the last chunk returns")
            except BaseException as exc:
                if in_flight is not None:
                    in_flight.cancel()
                    await asyncio.gather(in_flight, return_exceptions=True)
                if upload is not None:
                    await asyncio.shield(upload.abandon(self._object_url(name)))
                if isinstance(exc, GCS_ERRORS):
                    raise mapped(exc, f"Upload to {self.describe(key)} failed") from exc
                raise

    async def _start(self, http: httpx.AsyncClient, upload: str, name: str) -> str:
        """A resumable session; its URL is a credential for this upload (never logged)."""
        response = await self._request(http, "POST", upload,
                                       params={"uploadType": "resumable", "name": name},
                                       json={"name": name,
                                             "contentType": "application/octet-stream"})
        _check(response)
        return response.headers["Location"]

    async def get(self, key: str) -> Chunks:
        async for chunk in self.get_range(key, 0):
            yield chunk

    async def get_range(self, key: str, offset: int, length: int | None = None) -> Chunks:
        """The bytes from offset (length of them, or to the end), streamed."""
        if length == 0:
            return
        end = "" if length is None else str(offset + length - 1)
        headers = {"Range": f"bytes={offset}-{end}"} if offset or length is not None else {}
        with mapped_errors(f"Cannot read {self.describe(key)}"):
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                headers.update(await self._headers(http))
                async with http.stream("GET", self._object_url(self._full(key)),
                                       params={"alt": "media"}, headers=headers) as response:
                    if response.status_code == 404:
                        raise ObjectNotFound(f"No stored object {key}")
                    if response.status_code == 416:
                        return  # nothing at or after offset
                    if response.status_code >= 400:
                        await response.aread()
                    _check(response)
                    async for chunk in response.aiter_bytes(CHUNK):
                        yield chunk

    async def stat(self, key: str) -> ObjectInfo | None:
        with mapped_errors(f"Cannot stat {self.describe(key)}"):
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                response = await self._request(http, "GET", self._object_url(self._full(key)))
                if response.status_code == 404:
                    return None
                _check(response)
        return _info(self._unprefix(response.json()["name"]), response.json())

    async def list_objects(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        check_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        url = f"{self.endpoint}/storage/v1/b/{self.bucket}/o"
        with mapped_errors(f"Cannot list gs://{self.bucket}/{full_prefix}"):
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                token: str | None = None
                while True:
                    params = {"prefix": full_prefix, **({"pageToken": token} if token else {})}
                    response = await self._request(http, "GET", url, params=params)
                    _check(response)
                    page = response.json()
                    for item in sorted(page.get("items", []), key=lambda i: i["name"]):
                        yield _info(self._unprefix(item["name"]), item)
                    token = page.get("nextPageToken")
                    if not token:
                        return

    async def delete(self, key: str) -> None:
        with mapped_errors(f"Cannot delete {self.describe(key)}"):
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                response = await self._request(http, "DELETE",
                                               self._object_url(self._full(key)))
                if response.status_code != 404:
                    _check(response)

    async def discard_incomplete(self, key: str) -> int:
        """GCS cannot list resumable sessions: one a killed process left is invisible, holds
        no object and lapses after a week. Nothing to find here."""
        return 0

    async def discard_stale_partials(self, older_than_seconds: float) -> int:
        return 0


async def _full_chunks(chunks: Chunks, size: int) -> AsyncGenerator[tuple[bytes, bool], None]:
    """The stream re-cut into chunks of exactly `size` bytes (a multiple of 256 KiB, as GCS
    requires of every chunk but the last), each with whether it is the last (at least one,
    maybe empty). A full chunk waits for the next byte, which tells whether more follow."""
    pending: list[bytes] = []
    filled = 0
    ready: bytes | None = None
    async with aclosing(chunks) as source:
        async for piece in source:
            while piece:
                if ready is not None:
                    yield ready, False
                    ready = None
                part, piece = _cut(piece, size - filled)
                pending.append(part)
                filled += len(part)
                if filled == size:
                    ready, pending, filled = b"".join(pending), [], 0
    yield (ready, True) if ready is not None else (b"".join(pending), True)


def _cut(data: bytes, room: int) -> tuple[bytes, bytes]:
    return (data, b"") if len(data) <= room else (data[:room], data[room:])


def _info(key: str, item: dict[str, Any]) -> ObjectInfo:
    updated = item.get("updated")
    modified = datetime.fromisoformat(updated.replace("Z", "+00:00")) if updated else None
    return ObjectInfo(key, int(item.get("size", 0)), modified)


def _json_field(response: httpx.Response, name: str) -> str | None:
    try:
        value = response.json().get(name)
    except (ValueError, AttributeError):
        return None
    return str(value) if isinstance(value, str) else None


GCS_ERRORS = (httpx.HTTPError, GcsHttpError)
TRANSPORT_ERRORS = (*GCS_ERRORS, OSError)


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the call may succeed: the network or a busy/failing service."""
    if isinstance(exc, UploadLost):
        return False
    if isinstance(exc, GcsHttpError):
        return exc.status >= 500 or exc.status in (408, 429)
    return isinstance(exc, httpx.TransportError | OSError)


def _reason(exc: BaseException) -> str:
    """Status and reason only: the session URL and the token stay out of messages."""
    if isinstance(exc, GcsHttpError):
        return status_reason(exc.status, exc.reason)
    return type(exc).__name__


# The one translation of this backend's failures into StorageErrors.
ERRORS = ErrorMap(TRANSPORT_ERRORS, _reason, is_transient)
mapped = ERRORS.mapped
mapped_errors = ERRORS.errors_as
