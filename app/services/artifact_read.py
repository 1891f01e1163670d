"""Reading an artifact back: stored bytes → (decrypt) → (decompress) → plaintext stream."""

from app.config import CompressionAlgorithm, Settings
from app.errors import ConflictError
from app.models.backup import GOOD_STATUSES, Backup
from app.services.pipeline.compress import ALGORITHM_OF_SUFFIX, decompress
from app.services.pipeline.encrypt import EncryptionError, decrypt, load_identities
from app.services.pipeline.stages import Chunks, buffered


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

