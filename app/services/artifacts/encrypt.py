"""age encryption (X25519 recipients) through pyrage, streamed in a worker thread."""

from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import BinaryIO

import pyrage

from app.errors import AppError
from app.services.artifacts.bridge import through_thread
from app.services.artifacts.stages import Chunks


class EncryptionError(AppError):
    status_code = 422
    code = "encryption_error"


def parse_recipients(recipients: list[str]) -> list[pyrage.x25519.Recipient]:
    try:
        return [pyrage.x25519.Recipient.from_str(r) for r in recipients]
    except pyrage.RecipientError as exc:
        raise EncryptionError(f"Invalid age recipient: {exc}") from exc


def load_identities(path: Path) -> list[pyrage.x25519.Identity]:
    """X25519 identities of an age key file (comments and blank lines skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise EncryptionError(f"Cannot read the age identity file: {exc.strerror}") from exc
    try:
        identities = [pyrage.x25519.Identity.from_str(line.strip()) for line in lines
                      if line.strip() and not line.startswith("#")]
    except pyrage.IdentityError as exc:
        raise EncryptionError("The age identity file holds an invalid key") from exc
    if not identities:
        raise EncryptionError("The age identity file holds no key")
    return identities


def encrypt_blocking(recipients: list[pyrage.x25519.Recipient], reader: BinaryIO,
                     writer: BinaryIO) -> None:
    pyrage.encrypt_io(reader, writer, recipients)


def _decrypt(identities: list[pyrage.x25519.Identity], reader: BinaryIO,
             writer: BinaryIO) -> None:
    try:
        pyrage.decrypt_io(reader, writer, identities)
    except pyrage.DecryptError as exc:
        raise EncryptionError(
            f"Cannot decrypt: the identity does not match a recipient or the header is "
            f"damaged ({exc})") from exc
    except OSError as exc:
        # pyrage reports a failed payload authentication tag as an I/O error.
        raise EncryptionError(f"Cannot decrypt: the encrypted data is damaged ({exc})") from exc


async def encrypt(chunks: Chunks, recipients: list[str]) -> Chunks:
    work = partial(encrypt_blocking, parse_recipients(recipients))
    async with aclosing(through_thread(chunks, work)) as out:
        async for chunk in out:
            yield chunk


async def decrypt(chunks: Chunks, identities: list[pyrage.x25519.Identity]) -> Chunks:
    async with aclosing(through_thread(chunks, partial(_decrypt, identities))) as out:
        async for chunk in out:
            yield chunk
