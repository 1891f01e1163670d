"""Google Cloud Storage through its JSON API on httpx: resumable uploads sent chunk by
chunk as the stream comes (one chunk uploading, one filling), so the object exists only
once the last chunk lands; a failed upload's session is cancelled. Service-account keys
are exchanged for access tokens (RS256 JWT bearer grant)."""

import asyncio
import time
from collections.abc import AsyncGenerator
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
)

GCS_ENDPOINT = "https://storage.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
CHUNK_SIZE = 8 * 1024 * 1024  # a multiple of 256 KiB, as GCS requires for every chunk but the last
TIMEOUT = httpx.Timeout(120, connect=10)


class GcsHttpError(Exception):
    """A response GCS answered with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class GcsStorage(KeyPrefix):
    name = "gcs"

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 credentials: dict[str, Any] | None = None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = (endpoint_url or GCS_ENDPOINT).rstrip("/")
        self.chunk_size = chunk_size
        self._credentials = credentials
        self._token: tuple[str, float] | None = None
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_target(cls, s: StorageTargetSettings, settings: Settings) -> "GcsStorage":
        if not s.gcs_bucket:
            raise StorageError("storage target needs gcs_bucket")
        credentials = (service_account(s.gcs_credentials_json.get_secret_value())
                       if s.gcs_credentials_json else None)
        return cls(s.gcs_bucket, prefix=s.gcs_prefix, credentials=credentials,
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
        pending: list[bytes] = []
        pending_bytes = sent = 0
        session: str | None = None
        in_flight: asyncio.Task[None] | None = None
        upload = f"{self.endpoint}/upload/storage/v1/b/{self.bucket}/o"
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            try:
                async with aclosing(chunks) as source:
                    async for chunk in source:
                        # Every chunk but the last is exactly chunk_size (a multiple of
                        # 256 KiB): only an incoming chunk that crosses the line is cut.
                        while chunk:
                            piece, chunk = _cut(chunk, self.chunk_size - pending_bytes)
                            pending.append(piece)
                            pending_bytes += len(piece)
                            if pending_bytes < self.chunk_size:
                                continue
                            if session is None:
                                session = await self._start(http, upload, name)
                            if in_flight is not None:
                                await in_flight  # at most one chunk uploading, one filling
                            data = b"".join(pending)
                            pending, pending_bytes = [], 0
                            in_flight = asyncio.create_task(
                                self._send_chunk(http, session, data, sent, None))
                            sent += len(data)
                if in_flight is not None:
                    await in_flight
                    in_flight = None
                data = b"".join(pending)
                if session is None:  # small: one request, atomic
                    response = await self._request(
                        http, "POST", upload, content=data,
                        params={"uploadType": "media", "name": name},
                        headers={"Content-Type": "application/octet-stream"})
                    _check(response)
                    return len(data)
                await self._send_chunk(http, session, data, sent, sent + len(data))
                return sent + len(data)
            except BaseException as exc:
                if in_flight is not None:
                    in_flight.cancel()
                    await asyncio.gather(in_flight, return_exceptions=True)
                if session is not None:
                    await asyncio.shield(self._cancel(http, session))
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

    async def _send_chunk(self, http: httpx.AsyncClient, session: str, data: bytes,
                          start: int, total: int | None) -> None:
        """One chunk (total None: more follow). GCS may keep fewer bytes than were sent
        (a 308 whose Range ends short): the rest is sent again from there."""
        while True:
            span = f"{start}-{start + len(data) - 1}" if data else "*"
            headers = {"Content-Length": str(len(data)),
                       "Content-Range": f"bytes {span}/{'*' if total is None else total}"}
            response = await self._request(http, "PUT", session, content=_body(data),
                                           headers=headers)
            if response.status_code != 308:
                _check(response)
                if total is None:
                    raise GcsHttpError(response.status_code, "chunk not accepted")
                return
            kept = _persisted(response)
            if kept >= start + len(data) and total is None:
                return
            if not start <= kept < start + len(data):
                raise GcsHttpError(500, f"upload kept {kept} bytes, {start} were sent before")
            data, start = data[kept - start:], kept

    async def _cancel(self, http: httpx.AsyncClient, session: str) -> None:
        try:
            await self._request(http, "DELETE", session)  # GCS answers 499: cancelled
        except (httpx.HTTPError, GcsHttpError, OSError):
            # The endpoint may be gone: the session stays invisible and lapses in a week.
            pass

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


def _persisted(response: httpx.Response) -> int:
    """How many bytes a resumable session holds, from a 308's `Range: bytes=0-N`."""
    found = response.headers.get("Range", "")
    return int(found.rsplit("-", 1)[1]) + 1 if found.startswith("bytes=0-") else 0


async def _body(data: bytes) -> AsyncGenerator[bytes, None]:
    """The bytes as a one-shot stream: httpx keeps each request (and a plain `content`
    with it) in a reference cycle until the collector runs; a finished generator lets
    the chunk go at once."""
    yield data


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


def _check(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    reason = response.reason_phrase
    try:
        errors = response.json().get("error", {}).get("errors") or [{}]
        reason = errors[0].get("reason") or reason
    except (ValueError, AttributeError):
        pass
    raise GcsHttpError(response.status_code, reason)


GCS_ERRORS = (httpx.HTTPError, GcsHttpError)
TRANSPORT_ERRORS = (*GCS_ERRORS, OSError)


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the call may succeed: the network or a busy/failing service."""
    if isinstance(exc, GcsHttpError):
        return exc.status >= 500 or exc.status in (408, 429)
    return isinstance(exc, httpx.TransportError | OSError)


def _reason(exc: BaseException) -> str:
    """Status and reason only: the session URL and the token stay out of messages."""
    if isinstance(exc, GcsHttpError):
        if exc.status in (401, 403):
            return f"authentication failed or access denied ({exc.status} {exc.reason})"
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__


# The one translation of this backend's failures into StorageErrors.
ERRORS = ErrorMap(TRANSPORT_ERRORS, _reason, is_transient)
mapped = ERRORS.mapped
mapped_errors = ERRORS.errors_as
