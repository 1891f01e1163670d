"""The DatabaseKind of a source or a backup, from the registry."""

from app.config import SourceKind
from app.models.backup import Backup, BackupKind
from app.services.databases.base import DatabaseKind
from app.services.databases.registry import KIND_PACKAGES, load_kind

KINDS: dict[SourceKind, DatabaseKind] = {
    SourceKind(package): load_kind(package) for package in KIND_PACKAGES
}


def kind_of(kind: SourceKind | BackupKind) -> DatabaseKind:
    """The database kind of a source, or of a database backup (never a content one)."""
    return KINDS[SourceKind(kind.value)]


def in_other_format(backup: Backup) -> bool:
    """A database backup not in its kind's dump format (a PITR base backup): verified by
    checksum only, restored and drilled by its own path, never as a dump."""
    if backup.kind is None or backup.kind is BackupKind.content or not backup.format_chain:
        return False
    return backup.format_chain[0] != kind_of(backup.kind).format_name


def kind_of_format(format_name: str) -> DatabaseKind:
    """The kind whose artifacts start with `format_name` (the first of a format chain)."""
    return next(k for k in KINDS.values() if k.format_name == format_name)
