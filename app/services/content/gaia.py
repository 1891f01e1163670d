"""Gaia content: read URLs from each hub's `hub_info`, files hashed as they stream, and
the `.sig` signature file checked where one exists."""

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.config import ContentSettings
from app.errors import InvalidInputError
from app.services.artifacts.stages import Digest, rechunk
from app.services.content.formats.cid import b58encode
from app.services.content.ipfs import ItemFailed
from app.services.content.outbound import FetchFailed, Outbound, capped

SIG_MAX = 4096


async def read_prefixes(outbound: Outbound, settings: ContentSettings) -> list[str]:
    """Each configured hub's read URL prefix; each becomes an allowed origin."""
    prefixes = []
    for hub in settings.gaia_hubs:
        url = f"{str(hub).rstrip('/')}/hub_info"
        async with outbound.stream("GET", url) as response:
            info: dict[str, Any] = json.loads(await response.aread())
        prefix = info.get("read_url_prefix")
        if not isinstance(prefix, str) or not prefix.startswith(("http://", "https://")):
            raise FetchFailed(f"{url} has no read_url_prefix")
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        outbound.allow(prefix)
        prefixes.append(prefix)
    return prefixes


def gaia_url(reference: str, prefixes: list[str]) -> str:
    """A full read URL on a configured hub, from a URL or `address/path`."""
    text = reference.strip()
    if text.startswith(("http://", "https://")):
        if not any(text.startswith(p) for p in prefixes):
            raise InvalidInputError(f"{text[:200]} is not under a configured Gaia hub's read "
                                    "prefix")
        return text
    if not prefixes:
        raise InvalidInputError("No Gaia hub is configured (BACKUP_CONTENT__GAIA_HUBS)")
    if "/" not in text.strip("/") or ".." in text.split("/"):
        raise InvalidInputError(f"{text[:200]!r} is not `address/path`")
    return prefixes[0] + text.lstrip("/")


def gaia_path(url: str, prefixes: list[str]) -> str:
    """`address/path` of a read URL (its place in an exported tree)."""
    for prefix in prefixes:
        if url.startswith(prefix):
            return url[len(prefix):]
    return url.split("://", 1)[-1]


def address_of(public_key: bytes) -> str:
    """The Gaia (Bitcoin P2PKH) address of a compressed or uncompressed public key."""
    digest = hashlib.new("ripemd160", hashlib.sha256(public_key).digest()).digest()
    payload = b"\x00" + digest
    check = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    return b58encode(payload + check)


def check_signature(sig_text: bytes, content_sha256: bytes, owner: str | None) -> str:
    """Verify a `.sig` file ({signature: DER hex, publicKey: hex}) over the content's
    SHA-256; returns the signer's address. Raises ItemFailed when it does not hold."""
    import ecdsa  # only Gaia backups need it
    from ecdsa.util import sigdecode_der

    try:
        sig = json.loads(sig_text)
        public_key = bytes.fromhex(sig["publicKey"])
        signature = bytes.fromhex(sig["signature"])
        key = ecdsa.VerifyingKey.from_string(public_key, curve=ecdsa.SECP256k1)
        key.verify_digest(signature, content_sha256, sigdecode=sigdecode_der)
    except (ValueError, KeyError, TypeError, ecdsa.BadSignatureError,
            ecdsa.MalformedPointError) as exc:
        raise ItemFailed(f"signature check failed: {type(exc).__name__}: {exc}") from exc
    signer = address_of(public_key)
    if owner is not None and signer != owner:
        raise ItemFailed(f"signed by {signer}, not by the bucket's owner {owner}")
    return signer


@dataclass
class GaiaFile:
    url: str
    size: int
    sha256: str
    etag: str | None
    signer: str | None


async def current_etag(outbound: Outbound, url: str) -> str | None:
    async with outbound.stream("HEAD", url) as response:
        etag: str | None = response.headers.get("etag")
        return etag


async def _spool_to(response: httpx.Response, spool: Path, max_bytes: int,
                    url: str) -> Digest:
    """Write the response body to spool, capped, hashing it; file work in a thread."""
    handle = await asyncio.to_thread(spool.open, "wb")
    digest = Digest()

    def write(data: bytes) -> None:
        digest.add(data)
        handle.write(data)

    try:
        async for chunk in rechunk(capped(response, max_bytes, url)):
            await asyncio.to_thread(write, chunk)
        return digest
    finally:
        await asyncio.to_thread(handle.close)


async def download(outbound: Outbound, settings: ContentSettings, url: str, spool: Path,
                   prefixes: list[str]) -> GaiaFile:
    """Fetch url into spool (bounded by the size limit), hashing it; check its .sig."""
    async with outbound.stream("GET", url) as response:
        etag = response.headers.get("etag")
        written = await _spool_to(response, spool, settings.max_file_size, url)
    signer = None
    try:
        async with outbound.stream("GET", url + ".sig") as response:
            sig_text = b"".join([c async for c in capped(response, SIG_MAX, url + ".sig")])
    except FetchFailed as exc:
        if not isinstance(exc.details, dict) or exc.details.get("status") not in (403, 404):
            raise
    else:
        owner = gaia_path(url, prefixes).split("/", 1)[0] or None
        # ecdsa is pure Python: its first import and the check take milliseconds.
        signer = await asyncio.to_thread(check_signature, sig_text, written.sha256.digest(),
                                         owner)
    return GaiaFile(url, written.size, written.hexdigest, etag, signer)
