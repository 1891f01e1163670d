"""What every source reports about a dump, and what every kind of database provides."""

from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any, Protocol

from app.config import Settings, SourceCheck, SourceSettings
from app.errors import AppError
from app.models.backup import BackupKind, ContentEntry
from app.models.requests import DatabaseBackupCreate
from app.services.artifacts.stages import Chunks, Digest


class SourceError(AppError):
    status_code = 502
    code = "source_error"


@dataclass
class DumpInfo:
    """Filled in while a dump runs; complete when its stream has ended."""

    server_version: str | None = None
    tool_version: str | None = None
    contents: list[ContentEntry] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class DatabaseKind(Protocol):
    """What backup, restore, verify and the manifest need from one kind of database.

    Each kind lives in its own package (postgres/, mongodb/) and is listed once in
    `app.services.databases.kinds.KINDS`."""

    backup_kind: BackupKind
    format_name: str  # the artifact's base format, first in its format chain
    system_databases: frozenset[str]  # never a restore target
    holds_catalog: bool  # Backvault's catalog lives on a server of this kind
    empty_is_new: bool  # an existing but empty object takes a restore without conflict

    def fold(self, name: str) -> str:
        """A database name as the server compares it."""

    def unsupported_options(self, body: DatabaseBackupCreate) -> list[str]:
        """The request fields that are set but do not apply to this kind."""

    def dump(self, settings: Settings, source: SourceSettings, body: DatabaseBackupCreate,
             info: DumpInfo, database: str | None) -> Chunks:
        """The plaintext dump of `database` (the source's own when None)."""

    async def inspect_target(self, settings: Settings, source: SourceSettings,
                             database: str) -> tuple[bool, str | None, dict[str, int]]:
        """Whether `database` exists, its server version and the counts of what it holds."""

    def compatibility_warning(self, backup_version: str | None,
                              target_version: str | None) -> str | None:
        """Why a backup from one server version may not restore into the other, if so."""

    async def restore(self, settings: Settings, source: SourceSettings, stream: Chunks, *,
                      digest: Digest, sha256: str | None, database: str,
                      drop_existing: bool) -> dict[str, int]:
        """Restore the plaintext into `database`, refusing it if `digest` (of the stored
        bytes being read) ends up differing from `sha256`; returns the restored counts."""

    async def check_archive(self, stream: Chunks, settings: Settings,
                            expected: list[ContentEntry]
                            ) -> tuple[list[ContentEntry], list[str]]:
        """Parse the plaintext; what it holds and how it differs from `expected`."""

    item_word: str  # what its manifest entries are: "table", "collection"

    async def server_version(self, source: SourceSettings, timeout: float) -> str | None:
        """Connect and ask the server's version (raises when it cannot)."""

    async def count_check(self, source: SourceSettings, database: str, check: SourceCheck,
                          backup_time: datetime) -> float:
        """A restore drill's check of the source, run on `database` (its scratch copy)."""

    async def drop_database(self, source: SourceSettings, database: str) -> None:
        """Drop `database` on the source's server (a drill's scratch database)."""

    async def tool_problem(self, settings: Settings, version: str | None
                           ) -> tuple[dict[str, Any], str | None]:
        """Facts about the dump tool, and why it cannot serve a server of `version`."""

    def restore_command(self, steps: list[str], filename: str, database: str) -> str:
        """The stock-tool command that ends the pipeline `steps` (decrypt, decompress;
        empty when the file is read directly) and restores into NEW_DB."""


class DelegatedChecks:
    """The checks beside backup and restore, answered by a kind's `checks` module (its
    `server_version`, `count_check`, `drop_database` and `tool_problem` functions)."""

    checks: ModuleType

    async def server_version(self, source: SourceSettings, timeout: float) -> str | None:
        version: str | None = await self.checks.server_version(source, timeout)
        return version

    async def count_check(self, source: SourceSettings, database: str, check: SourceCheck,
                          backup_time: datetime) -> float:
        return float(await self.checks.count_check(source, database, check, backup_time))

    async def drop_database(self, source: SourceSettings, database: str) -> None:
        await self.checks.drop_database(source, database)

    async def tool_problem(self, settings: Settings, version: str | None
                           ) -> tuple[dict[str, Any], str | None]:
        found: tuple[dict[str, Any], str | None] = await self.checks.tool_problem(
            settings, version)
        return found
