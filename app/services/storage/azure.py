"""Azure Blob Storage through the SDK's aio client: block blobs whose blocks are staged as
the stream comes and committed in one block list last, so nothing is visible until the
whole object is; a failed upload's uncommitted blocks are dropped."""

import asyncio
import math
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock
from azure.storage.blob.aio import BlobClient, ContainerClient, LinearRetry

from app.config import Settings, StorageTargetSettings
from app.services.artifacts.stages import CHUNK, Chunks
from app.services.storage.azure_blocks import MAX_BLOCKS, BlockStager
from app.services.storage.base import (
    ErrorMap,
    KeyPrefix,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_prefix,
    status_reason,
)

MIN_BLOCK = 8 * 1024 * 1024
PUT_ATTEMPTS = 3  # each block request of a put, by the SDK (a put is never repeated whole)
# A put holds (BLOCKS_IN_FLIGHT + 1) blocks; 3 or 4 measured within noise of 2 against
# Azurite (CPU-bound there) and each holds a block more (bench/azure_put.py).
BLOCKS_IN_FLIGHT = 2
READ_SIZE = 2 * 1024 * 1024  # per ranged GET of a read: the SDK holds about 3 copies
TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError",
                             "IncrementalCopyOfEarlierVersionSnapshotNotAllowed"})


def block_size_for(max_object_bytes: int) -> int:
    """The smallest block size (whole MiB, at least 8) that fits the object in 50,000."""
    mib = 1024 * 1024
    return max(MIN_BLOCK, math.ceil(math.ceil(max_object_bytes / MAX_BLOCKS) / mib) * mib)


def account_name_of(url: str) -> str:
    """`acct` of https://acct.blob.core.windows.net, or of http://host:port/acct (Azurite)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.endswith(".blob.core.windows.net") or "." in host and not host[0].isdigit():
        return host.split(".")[0]
    return parts.path.strip("/").split("/")[0]


class AzureBlobStorage(KeyPrefix):
    name = "azure"

    def __init__(self, account_url: str, container: str, *, prefix: str = "",
                 account_key: str | None = None, sas_token: str | None = None,
                 max_object_bytes: int = 5 * 1024 ** 4,
                 blocks_in_flight: int = BLOCKS_IN_FLIGHT) -> None:
        self.account_url = account_url.rstrip("/")
        self.container = container
        self.prefix = prefix.strip("/")
        self.block_size = block_size_for(max_object_bytes)
        # A put holds at most (blocks_in_flight + 1) blocks: those sent and one filling.
        self.blocks_in_flight = blocks_in_flight
        self._credential: AzureNamedKeyCredential | AzureSasCredential | None = None
        if account_key:
            self._credential = AzureNamedKeyCredential(account_name_of(account_url), account_key)
        elif sas_token:
            self._credential = AzureSasCredential(sas_token.lstrip("?"))

    @classmethod
    def from_target(cls, s: StorageTargetSettings, settings: Settings) -> "AzureBlobStorage":
        if not s.azure_account_url or not s.azure_container:
            raise StorageError("storage target needs azure_account_url and azure_container")
        return cls(
            str(s.azure_account_url), s.azure_container, prefix=s.azure_prefix,
            account_key=s.azure_account_key.get_secret_value() if s.azure_account_key else None,
            sas_token=s.azure_sas_token.get_secret_value() if s.azure_sas_token else None,
            max_object_bytes=int(settings.limits.max_size_mb * 1024 * 1024 * 1.1) + MIN_BLOCK,
            blocks_in_flight=s.azure_blocks_in_flight)

    def _client(self, attempts: int = 1) -> ContainerClient:
        """A client; its own retries only for a put's blocks (their bytes are in hand):
        every other call is repeated by RetryingStorage."""
        return ContainerClient(
            self.account_url, self.container, credential=self._credential,
            # The SDK's default storage retry waits 15 s and more between attempts.
            retry_policy=LinearRetry(backoff=1, random_jitter_range=0, retry_total=attempts - 1),
            connection_timeout=10,
            read_timeout=120, max_single_get_size=READ_SIZE,
            max_chunk_get_size=READ_SIZE, max_single_put_size=self.block_size)


    def describe(self, key: str) -> str:
        return f"{self.account_url}/{self.container}/{self._full(key)}"

    async def prepare(self) -> None:
        with mapped_errors(f"Cannot reach container {self.container}"):
            async with self._client() as container:
                try:
                    # A listing, not the container's properties: a container SAS token
                    # may list but never read those.
                    async for _ in container.list_blobs(results_per_page=1):
                        break
                except ResourceNotFoundError:
                    try:
                        await container.create_container()
                    except ResourceExistsError:
                        pass  # another replica made it meanwhile

    async def put(self, key: str, chunks: Chunks) -> int:
        pending: list[bytes] = []
        pending_bytes = size = 0
        async with self._client(attempts=PUT_ATTEMPTS) as container:
            blob = container.get_blob_client(self._full(key))
            blocks = BlockStager(blob, uuid.uuid4().hex, self.blocks_in_flight)
            try:
                async with aclosing(chunks) as source:
                    async for chunk in source:
                        pending.append(chunk)
                        pending_bytes += len(chunk)
                        size += len(chunk)
                        if pending_bytes >= self.block_size:
                            await blocks.wait_for_room()
                            blocks.send(pending, pending_bytes)  # as they are: no join
                            pending, pending_bytes = [], 0
                if not blocks.ids:  # small: one Put Blob, atomic
                    await blob.upload_blob(b"".join(pending), overwrite=True)
                    return size
                if pending:
                    await blocks.wait_for_room()
                    blocks.send(pending, pending_bytes)
                    pending = []
                await blocks.finish()
                await blob.commit_block_list([BlobBlock(block_id) for block_id in blocks.ids])
            except BaseException as exc:
                await blocks.abandon()
                if blocks.ids:
                    await asyncio.shield(self._drop_uncommitted(blob))
                if isinstance(exc, AZURE_ERRORS):
                    raise mapped(exc, f"Upload to {self.describe(key)} failed") from exc
                raise
        return size

    async def _drop_uncommitted(self, blob: BlobClient) -> bool:
        """Drop a new blob's uncommitted blocks: commit an empty list only if no blob exists
        (never over a finished one), then delete that empty blob by its ETag. Blocks
        beside an existing blob are left for Azure's own 7-day collection: re-committing
        that blob's list could not restore one written by a single Put Blob."""
        try:
            committed, uncommitted = await blob.get_block_list("all")
            if not uncommitted or committed:
                return False
            made = await blob.commit_block_list([],
                                                match_condition=MatchConditions.IfMissing)
            await blob.delete_blob(etag=str(made["etag"]),
                                   match_condition=MatchConditions.IfNotModified)
            return True
        except (ResourceNotFoundError, ResourceExistsError, ResourceModifiedError):
            return False  # finished or dropped meanwhile by another caller
        except (TimeoutError, AzureError, aiohttp.ClientError, OSError):
            # The endpoint may be gone; the blocks stay invisible and are swept later.
            return False

    async def get(self, key: str) -> Chunks:
        async for chunk in self.get_range(key, 0):
            yield chunk

    async def get_range(self, key: str, offset: int, length: int | None = None) -> Chunks:
        """The bytes from offset (length of them, or to the end), streamed."""
        with mapped_errors(f"Cannot read {self.describe(key)}"):
            async with self._client() as container:
                blob = container.get_blob_client(self._full(key))
                try:
                    download = await blob.download_blob(offset=offset, length=length,
                                                        max_concurrency=1)
                except ResourceNotFoundError as exc:
                    raise ObjectNotFound(f"No stored object {key}") from exc
                except HttpResponseError as exc:
                    if exc.status_code == 416:  # an empty blob has no byte 0
                        return
                    raise
                async for chunk in download.chunks():
                    for start in range(0, len(chunk), CHUNK):
                        yield chunk[start:start + CHUNK]

    async def stat(self, key: str) -> ObjectInfo | None:
        with mapped_errors(f"Cannot stat {self.describe(key)}"):
            async with self._client() as container:
                try:
                    props = await container.get_blob_client(self._full(key)).get_blob_properties()
                except ResourceNotFoundError:
                    return None
        return ObjectInfo(key, int(props.size), props.last_modified)

    async def list_objects(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        check_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        with mapped_errors(f"Cannot list {self.account_url}/{self.container}/{full_prefix}"):
            async with self._client() as container:
                async for item in container.list_blobs(name_starts_with=full_prefix):
                    yield ObjectInfo(self._unprefix(item.name), int(item.size),
                                     item.last_modified)

    async def delete(self, key: str) -> None:
        with mapped_errors(f"Cannot delete {self.describe(key)}"):
            async with self._client() as container:
                try:
                    await container.get_blob_client(self._full(key)).delete_blob(
                        delete_snapshots="include")
                except ResourceNotFoundError:
                    pass

    async def _uncommitted(self, container: ContainerClient, prefix: str
                           ) -> dict[str, datetime | None]:
        """Blobs that have staged blocks and no committed ones, with their last change."""
        listing = container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])
        everything: dict[str, datetime | None] = {b.name: b.last_modified async for b in listing}
        async for committed in container.list_blobs(name_starts_with=prefix):
            everything.pop(committed.name, None)
        return everything

    async def pending_uploads(self) -> list[str]:
        """Keys with staged, uncommitted blocks (unfinished uploads of new blobs)."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        with mapped_errors(f"Cannot list unfinished uploads in {self.container}"):
            async with self._client() as container:
                found = await self._uncommitted(container, prefix)
        return sorted(self._unprefix(name) for name in found)

    async def discard_incomplete(self, key: str) -> int:
        name = self._full(key)
        with mapped_errors(f"Cannot discard unfinished uploads of {self.describe(key)}"):
            async with self._client() as container:
                if name not in await self._uncommitted(container, name):
                    return 0
                return int(await self._drop_uncommitted(container.get_blob_client(name)))

    async def discard_stale_partials(self, older_than_seconds: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        prefix = f"{self.prefix}/" if self.prefix else ""
        dropped = 0
        with mapped_errors(f"Cannot discard stale uploads in {self.container}"):
            async with self._client() as container:
                for name, changed in (await self._uncommitted(container, prefix)).items():
                    if changed is None or changed <= cutoff:
                        dropped += await self._drop_uncommitted(container.get_blob_client(name))
        return dropped


def _code(exc: HttpResponseError) -> str:
    return str(getattr(exc, "error_code", None) or "")


AZURE_ERRORS = (AzureError, aiohttp.ClientError, asyncio.TimeoutError)
TRANSPORT_ERRORS = (*AZURE_ERRORS, OSError)


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the call may succeed: the network or a busy/failing service."""
    if isinstance(exc, HttpResponseError) and exc.status_code:
        return (exc.status_code >= 500 or exc.status_code in (408, 429)
                or _code(exc) in TRANSIENT_CODES)
    return isinstance(exc, ServiceRequestError | ServiceResponseError | aiohttp.ClientError
                      | asyncio.TimeoutError | OSError)


def _reason(exc: BaseException) -> str:
    """Status and error code only: the SDK's own text can carry the request's URL (with a
    SAS token) and headers."""
    if isinstance(exc, HttpResponseError) and exc.status_code:
        return status_reason(exc.status_code, _code(exc) or exc.reason or "error")
    return type(exc).__name__


# The one translation of this backend's failures into StorageErrors.
ERRORS = ErrorMap(TRANSPORT_ERRORS, _reason, is_transient)
mapped = ERRORS.mapped
mapped_errors = ERRORS.errors_as
