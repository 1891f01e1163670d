"""IPFS content through the trustless gateway interface, verified as it streams,
and back into a Kubo node."""

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import structlog

from app.config import ContentSettings
from app.errors import AppError, InvalidInputError
from app.services.artifacts.stages import Chunks, SizeLimitExceeded
from app.services.content.formats.car import CarError, CarReader, section_bytes
from app.services.content.formats.cid import Cid, parse_cid
from app.services.content.formats.dag import DagWalk, verified_car
from app.services.content.outbound import FetchFailed, FetchRefused, Outbound, capped

log = structlog.get_logger(__name__)
CAR_TYPE = "application/vnd.ipld.car"
# The CAR framing around the blocks (lengths, CIDs) stays well under this.
CAR_OVERHEAD = 1.05
T = TypeVar("T")
CID_IN_PATH = re.compile(r"/ipfs/([A-Za-z0-9]+)")


class ItemFailed(AppError):
    status_code = 502
    code = "content_item_failed"


def address_of(cid: Cid) -> str:
    """The content-store address of an IPFS object."""
    return f"ipfs:{cid}"


def cid_of_address(address: str) -> Cid:
    return parse_cid(address.removeprefix("ipfs:"))


def cid_of_reference(reference: str) -> Cid:
    """The CID an item reference names: `CID`, `ipfs://CID`, `/ipfs/CID` or a gateway URL."""
    text = reference.strip()
    if text.startswith("ipfs://"):
        text = text[len("ipfs://"):]
    elif "/ipfs/" in text:
        found = CID_IN_PATH.search(text)
        text = found.group(1) if found else text
    if "/" in text.strip("/"):
        raise InvalidInputError(f"{reference[:100]!r}: paths inside a CID are not supported; "
                                "name the CID itself")
    return parse_cid(text.strip("/"))


async def with_gateways(settings: ContentSettings,
                        work: Callable[[str], Awaitable[T]]) -> T:
    """Try each gateway in order, the whole list up to `retries` more times with backoff.

    Errors that no gateway can fix (too large, bad input) end at once; a gateway that
    lies or redirects where it may not is passed over for the next.
    """
    gateways = [str(g).rstrip("/") for g in settings.ipfs_gateways]
    if not gateways:
        raise ItemFailed("No IPFS gateway is configured (BACKUP_CONTENT__IPFS_GATEWAYS)")
    errors: list[str] = []
    for round_ in range(settings.retries + 1):
        if round_:
            await asyncio.sleep(min(0.5 * 2 ** (round_ - 1), 8.0))
        for gateway in gateways:
            try:
                return await work(gateway)
            except (SizeLimitExceeded, InvalidInputError):
                raise
            except (FetchFailed, FetchRefused, CarError, httpx.HTTPError, TimeoutError) as exc:
                message = str(exc) or type(exc).__name__
                errors.append(f"{gateway}: {message}")
                log.info("gateway attempt failed", gateway=gateway, error=message[:300])
    last = errors[-1] if errors else "no attempt"
    raise ItemFailed(f"{len(errors)} attempt(s) failed; last: {last}")


def entity_url(gateway: str, cid: Cid) -> str:
    return f"{gateway}/ipfs/{cid}?format=car&dag-scope=entity"


async def fetch_entity(outbound: Outbound, settings: ContentSettings, gateway: str, cid: Cid,
                       walk: DagWalk, consume: Callable[[Chunks], Awaitable[T]]) -> T:
    """Stream the verified CAR of cid's entity from one gateway into `consume`."""
    limit = settings.max_file_size
    async with asyncio.timeout(settings.timeout_seconds * 10), outbound.stream(
            "GET", entity_url(gateway, cid), headers={"Accept": CAR_TYPE}) as response:
        kind = response.headers.get("content-type", "")
        if not kind.startswith(CAR_TYPE):
            raise FetchFailed(f"{gateway} answered {kind or 'no content type'}, not a CAR")
        body = capped(response, int(limit * CAR_OVERHEAD) + 65536, str(cid))
        return await consume(verified_car(body, cid, walk, limit))


async def checked_blocks(car: Chunks, roots: set[Cid] | None = None) -> AsyncIterator[bytes]:
    """The sections of a stored CAR, each block checked against its CID again."""
    reader = CarReader(car)
    async for block in reader.blocks():
        if roots is not None and not roots.issuperset(reader.roots):
            raise CarError("stored CAR names other roots than recorded")
        if not await block.cid.matches_off_loop(block.data):
            raise CarError(f"stored block {block.cid} does not match its CID")
        yield section_bytes(block)


async def import_car(outbound: Outbound, kubo_api: str, car: AsyncIterator[bytes],
                     pin: bool) -> list[dict[str, Any]]:
    """POST a CAR to Kubo's dag/import (streamed as multipart); returns its root reports."""
    boundary = uuid.uuid4().hex

    async def body() -> AsyncIterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               f"filename=\"backup.car\"\r\nContent-Type: {CAR_TYPE}\r\n\r\n").encode()
        async for chunk in car:
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    url = (f"{kubo_api.rstrip('/')}/api/v0/dag/import?pin-roots={str(pin).lower()}"
           "&stats=false")
    async with outbound.stream("POST", url, content=body(), headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"}) as response:
        text = (await response.aread()).decode()
    reports = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r["Root"] for r in reports if "Root" in r]


async def kubo_pins(outbound: Outbound, kubo_api: str) -> list[str]:
    """The recursive pins of a Kubo node."""
    url = f"{kubo_api.rstrip('/')}/api/v0/pin/ls?type=recursive"
    async with outbound.stream("POST", url) as response:
        keys: dict[str, Any] = json.loads(await response.aread()).get("Keys") or {}
    return sorted(keys)
