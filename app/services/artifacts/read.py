"""Reading an artifact back: stored bytes → (decrypt) → (decompress) → plaintext stream,
and the cheap checks a restore makes first (the age header, the stored checksum)."""

import asyncio
import io
from contextlib import aclosing
from enum import StrEnum

import pyrage

from app.config import CompressionAlgorithm, Settings
from app.errors import AppError, ConflictError
from app.models.backup import GOOD_STATUSES, Backup
from app.services.artifacts.compress import ALGORITHM_OF_SUFFIX, decompress
from app.services.artifacts.encrypt import EncryptionError, decrypt, load_identities
from app.services.artifacts.stages import Chunks, buffered
from app.services.storage import Storage

HEADER_LIMIT = 64 * 1024  # an age header with hundreds of recipients still fits
NONCE_BYTES = 16
NO_MATCH = "No matching keys found"


class IdentityMismatchError(AppError):
    """The configured age identity cannot open a backup: configuration, not damage."""

    status_code = 409
    code = "identity_mismatch"


class HeaderState(StrEnum):
    ok = "ok"
    no_identity = "no_identity"  # none configured, or the file is unreadable
    mismatch = "mismatch"  # no configured key opens it
    damaged = "damaged"


def require_artifact(backup: Backup) -> str:
    if backup.status not in GOOD_STATUSES or not backup.storage_key:
        raise ConflictError(f"Backup {backup.id} is {backup.status.value}; only completed "
                            "backups have an artifact to read",
                            {"status": backup.status.value})
    return backup.storage_key


def can_open(backup: Backup, settings: Settings) -> bool:
    """Whether this service can see inside the artifact (identity present if encrypted)."""
    return not backup.encrypted or settings.encryption.identity_file is not None


def plaintext(raw: Chunks, backup: Backup, settings: Settings) -> Chunks:
    return opened(raw, backup.format_chain, settings)


def opened(raw: Chunks, format_chain: list[str], settings: Settings) -> Chunks:
    """Stored bytes of the given format chain → the plaintext they hold."""
    stream = raw
    if "age" in format_chain:
        if settings.encryption.identity_file is None:
            raise EncryptionError("The object is encrypted and no identity file is configured "
                                  "(BACKUP_ENCRYPTION__IDENTITY_FILE)")
        stream = decrypt(buffered(stream), load_identities(settings.encryption.identity_file))
    compression = next((ALGORITHM_OF_SUFFIX[s] for s in format_chain
                        if s in ALGORITHM_OF_SUFFIX), CompressionAlgorithm.none)
    return decompress(buffered(stream), compression)


async def _age_head(storage: Storage, key: str) -> bytes:
    """The object's first bytes: its age header and payload nonce, no more than needed."""
    head = b""
    async with aclosing(storage.get(key)) as chunks:
        async for chunk in chunks:
            head += chunk
            mac = head.find(b"\n--- ")
            end = head.find(b"\n", mac + 1) if mac >= 0 else -1
            if end >= 0 and len(head) >= end + 1 + NONCE_BYTES:
                return head[:end + 1 + NONCE_BYTES]
            if len(head) > HEADER_LIMIT:
                break
    return head[:HEADER_LIMIT]


def _open_header(head: bytes, identities: list[pyrage.x25519.Identity]) -> str | None:
    """None when the identities open the header; else pyrage's reason."""
    try:
        pyrage.decrypt_io(io.BytesIO(head), io.BytesIO(), identities)
    except pyrage.DecryptError as exc:
        return str(exc)
    except OSError:
        pass  # the header opened; the payload ends early because we cut it
    return None


def mismatch_message(backup: Backup, identities: list[pyrage.x25519.Identity]) -> str:
    keys = ", ".join(str(i.to_public()) for i in identities)
    recipients = ", ".join(backup.recipients) or "recipients not recorded"
    return (f"The configured identity does not match a recipient of backup {backup.id}, so "
            f"it cannot open it (encrypted to {recipients}; the identity file "
            f"BACKUP_ENCRYPTION__IDENTITY_FILE holds keys for {keys})")


async def check_header(storage: Storage, backup: Backup,
                       settings: Settings) -> tuple[HeaderState, str]:
    """Whether the configured identity opens the backup's age header, reading only the
    object's first bytes. Unencrypted backups are `ok`."""
    if not backup.encrypted:
        return HeaderState.ok, ""
    if settings.encryption.identity_file is None:
        return HeaderState.no_identity, ("the backup is encrypted and no identity file is "
                                         "configured (BACKUP_ENCRYPTION__IDENTITY_FILE)")
    try:
        identities = load_identities(settings.encryption.identity_file)
    except EncryptionError as exc:
        return HeaderState.no_identity, exc.message
    head = await _age_head(storage, require_artifact(backup))
    reason = await asyncio.to_thread(_open_header, head, identities)
    if reason is None:
        return HeaderState.ok, ""
    ours = {str(i.to_public()) for i in identities}
    if reason == NO_MATCH and not ours & set(backup.recipients):
        return HeaderState.mismatch, mismatch_message(backup, identities)
    return HeaderState.damaged, f"the stored object's age header is damaged ({reason})"
