"""The registry of database kinds: a new kind is one package and one line here."""

from app.config import SourceKind
from app.models.backup import BackupKind
from app.services.databases.base import DatabaseKind
from app.services.databases.mongodb.kind import MONGODB
from app.services.databases.postgres.kind import POSTGRES

KINDS: dict[SourceKind, DatabaseKind] = {
    SourceKind.postgres: POSTGRES,
    SourceKind.mongodb: MONGODB,
}


def kind_of(kind: SourceKind | BackupKind) -> DatabaseKind:
    """The database kind of a source, or of a database backup (never a content one)."""
    return KINDS[SourceKind(kind.value)]


def kind_of_format(format_name: str) -> DatabaseKind:
    """The kind whose artifacts start with `format_name` (the first of a format chain)."""
    return next(k for k in KINDS.values() if k.format_name == format_name)
