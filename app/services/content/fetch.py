"""One content item to storage: fetched, verified, sealed and stored once by its content
address; an IPFS object already stored is not fetched again, nor a Gaia file whose ETag
has not changed."""

import asyncio
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import structlog
from beanie import PydanticObjectId

from app.config import ContentSourceSettings, ContentType, Settings
from app.models.content import ContentItem, ContentObject, GaiaUrlState, ItemStatus
from app.services.artifacts.stages import Chunks, Digest
from app.services.content import gaia, ipfs
from app.services.content.formats.cid import Cid
from app.services.content.formats.dag import DagWalk
from app.services.content.outbound import Outbound
from app.services.content.record import StoredObjects
from app.services.databases.backup import MB, sealed
from app.services.databases.manifest import format_chain
from app.services.jobs.runner import Progress, error_text
from app.services.storage import Storage, StorageTargets

log = structlog.get_logger(__name__)


@dataclass
class Run:
    """State shared by the items of one content backup."""

    settings: Settings
    targets: StorageTargets  # new objects go to the default and record it
    outbound: Outbound
    progress: Progress
    limit: asyncio.Semaphore
    prefixes: list[str] = field(default_factory=list)
    new_bytes: int = 0
    # One fetch per address even when several items (or directories) share it.
    inflight: dict[str, asyncio.Task[list[str]]] = field(default_factory=dict)
    objects: StoredObjects = field(init=False)

    def __post_init__(self) -> None:
        self.objects = StoredObjects(self.targets)

    @property
    def storage(self) -> Storage:
        return self.targets.default

    def placed(self) -> dict[str, str | None]:
        """Where a new object is recorded as written (as backups record it)."""
        return {"storage_target": self.targets.recorded_name(self.targets.default_name),
                "storage_backend": self.storage.name}


async def _store(run: Run, key: str, plaintext: Chunks) -> tuple[int, str]:
    digest = Digest()
    # Items run side by side already; each compresses in its own thread, no workers.
    stored = await run.storage.put(key, sealed(run.settings, plaintext, digest, run.progress,
                                               threads=-1))
    run.new_bytes += stored
    return stored, digest.hexdigest


async def ensure_ipfs(run: Run, cid: Cid) -> list[str]:
    """Store cid (and, for a directory, its entries) unless stored; returns every address."""
    address = ipfs.address_of(cid)
    if address not in run.inflight:
        run.inflight[address] = asyncio.create_task(_ensure_ipfs(run, cid, address))
    return await asyncio.shield(run.inflight[address])


async def _fetch_ipfs(run: Run, cid: Cid, address: str) -> ContentObject:
    chain = format_chain(run.settings, "car")
    key = f"content/ipfs/{cid}.{'.'.join(chain)}"
    walk = DagWalk(cid)

    async def attempt(gateway: str) -> tuple[int, str]:
        walk.blocks, walk.block_bytes, walk.children = 0, 0, []
        async with run.limit:
            return await ipfs.fetch_entity(run.outbound, run.settings.content, gateway,
                                           cid, walk, partial(_store, run, key))

    stored, sha = await ipfs.with_gateways(run.settings.content, attempt)
    return ContentObject(id=address, type=ContentType.ipfs, storage_key=key,
                         format_chain=chain, size=walk.block_bytes, stored_bytes=stored,
                         sha256=sha, blocks=walk.blocks, kind=walk.kind,
                         children=[ipfs.address_of(link.cid) for link in walk.children],
                         **run.placed())


async def _ensure_ipfs(run: Run, cid: Cid, address: str) -> list[str]:
    existing = await run.objects.stored(address)
    fetched = existing is None
    if existing is None:
        existing = await _fetch_ipfs(run, cid, address)
    addresses = [address]
    for child in existing.children:
        addresses += await ensure_ipfs(run, ipfs.cid_of_address(child))
    if fetched:  # a new directory counts as stored only once all its entries are
        run.objects.new[address] = existing
    return addresses


def _with(item: ContentItem, **fields: Any) -> ContentItem:
    updated: ContentItem = item.model_copy(update=fields)
    return updated


def _spool_file(spool_dir: Path | None) -> IO[bytes]:
    """A temporary file (deleted on close) to download a Gaia file into."""
    directory = spool_dir or Path(tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    return tempfile.NamedTemporaryFile(dir=directory, prefix="gaia-")


async def _file_chunks(path: Path) -> Chunks:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, MB):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def _unchanged_gaia(run: Run, url: str, item: ContentItem) -> ContentItem | None:
    """The item completed from a stored copy when the file's ETag has not changed."""
    previous = await GaiaUrlState.get(url)
    if previous is None:
        return None
    etag = await gaia.current_etag(run.outbound, url)
    kept = await run.objects.stored(previous.address) if etag == previous.etag else None
    if kept is None:
        return None
    return _with(item, address=kept.address, objects=[kept.address], etag=etag,
                 status=ItemStatus.existing, size=kept.size,
                 sha256=previous.address.removeprefix("gaia:"))


async def _download_gaia(run: Run, url: str) -> tuple[gaia.GaiaFile, ItemStatus]:
    """Download url into a spool file and store it unless its bytes are stored already."""
    handle = await asyncio.to_thread(_spool_file, run.settings.storage.spool_dir)
    try:
        spool = Path(handle.name)
        async with run.limit:
            fetched = await gaia.download(run.outbound, run.settings.content, url, spool,
                                          run.prefixes)
        address = f"gaia:{fetched.sha256}"
        if address in run.objects.new or await run.objects.stored(address) is not None:
            return fetched, ItemStatus.existing
        chain = format_chain(run.settings, "bin")
        key = f"content/gaia/{fetched.sha256}.{'.'.join(chain)}"
        stored, sha = await _store(run, key, _file_chunks(spool))
        run.objects.new[address] = ContentObject(
            id=address, type=ContentType.gaia, storage_key=key, format_chain=chain,
            size=fetched.size, stored_bytes=stored, sha256=sha, etag=fetched.etag,
            **run.placed())
        return fetched, ItemStatus.new
    finally:
        await asyncio.to_thread(handle.close)


async def ensure_gaia(run: Run, url: str, item: ContentItem) -> ContentItem:
    """Store a Gaia file unless its ETag is unchanged since a stored copy; returns the
    item completed."""
    item = _with(item, reference=url, path=gaia.gaia_path(url, run.prefixes))
    unchanged = await _unchanged_gaia(run, url, item)
    if unchanged is not None:
        return unchanged
    fetched, status = await _download_gaia(run, url)
    address = f"gaia:{fetched.sha256}"
    if fetched.etag:
        await GaiaUrlState(id=url, etag=fetched.etag, address=address).save()
    return _with(item, address=address, objects=[address], status=status, size=fetched.size,
                 sha256=fetched.sha256, etag=fetched.etag)


async def _ipfs_item(run: Run, item: ContentItem, reference: str) -> ContentItem:
    cid = ipfs.cid_of_reference(reference)
    objects = await ensure_ipfs(run, cid)
    address = ipfs.address_of(cid)
    root = run.objects.new.get(address) or run.objects.known[address]
    return _with(item, address=address, objects=list(dict.fromkeys(objects)), size=root.size,
                 sha256=root.sha256,
                 status=ItemStatus.new if address in run.objects.new else ItemStatus.existing)


async def back_up_item(run: Run, source: ContentSourceSettings, backup_id: PydanticObjectId,
                       reference: str, origin: str | None) -> ContentItem:
    """One item to storage; a failure is recorded on the item, never raised."""
    item = ContentItem(backup_id=backup_id, source=source.name, type=source.type,
                       reference=reference, origin=origin, status=ItemStatus.failed)
    try:
        if source.type is ContentType.ipfs:
            item = await _ipfs_item(run, item, reference)
        else:
            item = await ensure_gaia(run, gaia.gaia_url(reference, run.prefixes), item)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        item.error = error_text(exc)
        log.warning("content item failed", source=source.name, reference=reference[:200],
                    error=item.error)
    run.progress.items_done += 1
    return item
