"""S3-compatible storage through aioboto3: multipart with bounded memory, aborted on failure."""

import asyncio
import builtins
import math
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from app.config import Settings, StorageSettings, StorageTargetSettings
from app.services.artifacts.stages import CHUNK, Chunks
from app.services.storage.base import (
    ErrorMap,
    KeyPrefix,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_prefix,
)

MIN_PART = 5 * 1024 * 1024  # the S3 minimum for all parts but the last
MAX_PARTS = 10_000
PUT_ATTEMPTS = 3  # each part request of a put, by the S3 client (a put is never repeated whole)


def part_size_for(max_object_bytes: int) -> int:
    """The smallest part size (whole MiB, at least 5) that fits max_object_bytes in 10,000 parts."""
    needed = math.ceil(max_object_bytes / MAX_PARTS)
    mib = 1024 * 1024
    return max(MIN_PART, math.ceil(needed / mib) * mib)


class S3Storage(KeyPrefix):
    name = "s3"

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region: str = "us-east-1", access_key: str | None = None,
                 secret_key: str | None = None, max_object_bytes: int = 5 * 1024 ** 4) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size_for(max_object_bytes)
        self._session = aioboto3.Session()
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url, "region_name": region,
            "aws_access_key_id": access_key, "aws_secret_access_key": secret_key,
            "config": Config(signature_version="s3v4", s3={"addressing_style": "path"},
                             retries={"max_attempts": 1, "mode": "standard"},
                             connect_timeout=10, read_timeout=120),
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Storage":
        """The legacy single-backend settings (BACKUP_STORAGE__S3_*)."""
        return cls.from_target(settings.storage, settings)

    @classmethod
    def from_target(cls, s: "StorageTargetSettings | StorageSettings",
                    settings: Settings) -> "S3Storage":
        if not s.s3_bucket:
            raise StorageError("storage.s3_bucket is not set")
        return cls(
            s.s3_bucket, prefix=s.s3_prefix,
            endpoint_url=str(s.s3_endpoint_url).rstrip("/") if s.s3_endpoint_url else None,
            region=s.s3_region,
            access_key=s.s3_access_key.get_secret_value() if s.s3_access_key else None,
            secret_key=s.s3_secret_key.get_secret_value() if s.s3_secret_key else None,
            # Headroom over the backup size limit: compression can expand incompressible data.
            max_object_bytes=int(settings.limits.max_size_mb * 1024 * 1024 * 1.1) + MIN_PART,
        )

    def _client(self, attempts: int = 1) -> Any:
        """A client; its own retries only where asked (the parts of a put, whose bytes are
        in hand): every other call is repeated by RetryingStorage, with its settings."""
        args = self._client_args
        if attempts > 1:
            args = {**args, "config": args["config"].merge(
                Config(retries={"max_attempts": attempts, "mode": "standard"}))}
        return self._session.client("s3", **args)


    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    async def prepare(self) -> None:
        await self.ensure_bucket()

    async def ensure_bucket(self) -> None:
        with mapped_errors(f"Cannot reach bucket {self.bucket}"):
            async with self._client() as s3:
                try:
                    await s3.head_bucket(Bucket=self.bucket)
                except ClientError as exc:
                    if _status(exc) != 404:
                        raise
                    await s3.create_bucket(Bucket=self.bucket)

    async def put(self, key: str, chunks: Chunks) -> int:
        full = self._full(key)
        # Chunks are kept as they come and joined once per part: one copy per part.
        pending: list[bytes] = []
        pending_bytes = 0
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        in_flight: asyncio.Task[None] | None = None
        async with self._client(attempts=PUT_ATTEMPTS) as s3:

            async def send_part(number: int, data: bytes) -> None:
                response = await s3.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                PartNumber=number, Body=data)
                parts.append({"PartNumber": number, "ETag": response["ETag"]})

            try:
                async with aclosing(chunks) as source:
                    async for chunk in source:
                        pending.append(chunk)
                        pending_bytes += len(chunk)
                        size += len(chunk)
                        if pending_bytes >= self.part_size:
                            if upload_id is None:
                                created = await s3.create_multipart_upload(Bucket=self.bucket,
                                                                           Key=full)
                                upload_id = created["UploadId"]
                            if in_flight is not None:
                                await in_flight  # at most one part uploading, one filling
                            number = len(parts) + 1
                            if number > MAX_PARTS:
                                raise StorageError("Object exceeds 10,000 multipart parts")
                            # A part may run a chunk over part_size (S3 only sets a
                            # minimum), which saves cutting and copying it.
                            data = b"".join(pending)
                            pending, pending_bytes = [], 0
                            in_flight = asyncio.create_task(send_part(number, data))
                if in_flight is not None:
                    await in_flight
                    in_flight = None
                if upload_id is None:
                    await s3.put_object(Bucket=self.bucket, Key=full, Body=b"".join(pending))
                    return size
                if pending:
                    await send_part(len(parts) + 1, b"".join(pending))
                await s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id,
                    MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])})
            except BaseException as exc:
                if in_flight is not None:
                    in_flight.cancel()
                    await asyncio.gather(in_flight, return_exceptions=True)
                if upload_id is not None:
                    await asyncio.shield(self._abort(s3, full, upload_id))
                # Not OSError here: the source stream's own failures pass as they are.
                if isinstance(exc, S3_ERRORS):
                    raise mapped(exc, f"Upload to {self.describe(key)} failed") from exc
                raise
        return size

    async def _abort(self, s3: Any, full: str, upload_id: str) -> None:
        try:
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            # The endpoint may be gone; the upload is still invisible until completed.
            pass

    async def get(self, key: str) -> Chunks:
        with mapped_errors(f"Cannot read {self.describe(key)}"):
            async with self._client() as s3:
                try:
                    response = await s3.get_object(Bucket=self.bucket, Key=self._full(key))
                except ClientError as exc:
                    if _status(exc) == 404:
                        raise ObjectNotFound(f"No stored object {key}") from exc
                    raise
                body = response["Body"]
                try:
                    while chunk := await body.read(CHUNK):
                        yield chunk
                finally:
                    body.close()

    async def stat(self, key: str) -> ObjectInfo | None:
        with mapped_errors(f"Cannot stat {self.describe(key)}"):
            async with self._client() as s3:
                try:
                    head = await s3.head_object(Bucket=self.bucket, Key=self._full(key))
                except ClientError as exc:
                    if _status(exc) == 404:
                        return None
                    raise
        return ObjectInfo(key, int(head["ContentLength"]), head.get("LastModified"))

    async def list_objects(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        check_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        with mapped_errors(f"Cannot list s3://{self.bucket}/{full_prefix}"):
            async with self._client() as s3:
                paginator = s3.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                    for item in page.get("Contents", []):
                        yield ObjectInfo(self._unprefix(item["Key"]), int(item["Size"]),
                                         item.get("LastModified"))

    async def delete(self, key: str) -> None:
        with mapped_errors(f"Cannot delete {self.describe(key)}"):
            async with self._client() as s3:
                await s3.delete_object(Bucket=self.bucket, Key=self._full(key))

    async def _uploads(self, s3: Any, key: str = "") -> "builtins.list[dict[str, Any]]":
        prefix = self._full(key) if key else (f"{self.prefix}/" if self.prefix else "")
        uploads: builtins.list[dict[str, Any]] = []
        paginator = s3.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            uploads += page.get("Uploads", [])
        return uploads

    async def pending_uploads(self) -> "builtins.list[str]":
        """Keys of multipart uploads started and neither completed nor aborted."""
        with mapped_errors(f"Cannot list uploads in {self.bucket}"):
            async with self._client() as s3:
                return [self._unprefix(u["Key"]) for u in await self._uploads(s3)]

    async def discard_incomplete(self, key: str) -> int:
        with mapped_errors(f"Cannot discard unfinished uploads of {self.describe(key)}"):
            async with self._client() as s3:
                uploads = [u for u in await self._uploads(s3, key)
                           if u["Key"] == self._full(key)]
                for upload in uploads:
                    await self._abort(s3, upload["Key"], upload["UploadId"])
        return len(uploads)

    async def discard_stale_partials(self, older_than_seconds: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        aborted = 0
        with mapped_errors(f"Cannot discard stale uploads in {self.bucket}"):
            async with self._client() as s3:
                for upload in await self._uploads(s3):
                    if upload["Initiated"] <= cutoff:
                        await self._abort(s3, upload["Key"], upload["UploadId"])
                        aborted += 1
        return aborted


S3_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError)
TRANSPORT_ERRORS = (*S3_ERRORS, OSError)
TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException",
                             "InternalError", "ServiceUnavailable", "RequestLimitExceeded"})


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the call may succeed: the network or a busy/failing server."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return _status(exc) >= 500 or code in TRANSIENT_CODES
    return isinstance(exc, HTTPClientError | BotoConnectionError | aiohttp.ClientError | OSError)



def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', str(exc))}"
    return str(exc) or type(exc).__name__


# The one translation of this backend's failures into StorageErrors.
ERRORS = ErrorMap(TRANSPORT_ERRORS, _reason, is_transient)
mapped = ERRORS.mapped
mapped_errors = ERRORS.errors_as
