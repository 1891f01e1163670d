"""What a drill does to its scratch database besides the restore: where it lives, the
source's checks and the drop. The kind of database does each (`DatabaseKind`)."""

from datetime import datetime

from app.config import Settings, SourceCheck, SourceSettings
from app.services.databases.kinds import kind_of


def scratch_source(settings: Settings, source: SourceSettings) -> SourceSettings:
    """The source as the drill sees it: on the drill server when one is configured."""
    server = settings.drills.for_source(source.name).uri
    return source if server is None else source.model_copy(update={"uri": server})


async def run_check(source: SourceSettings, database: str, check: SourceCheck,
                    backup_time: datetime) -> float:
    return await kind_of(source.kind).count_check(source, database, check, backup_time)


async def drop_scratch(settings: Settings, source: SourceSettings, database: str) -> None:
    """Drop a scratch database; refuses any name without the drill prefix."""
    prefix = settings.drills.prefix
    if not prefix or not database.startswith(prefix):
        raise ValueError(f"refused to drop {database!r}: not a drill scratch database")
    await kind_of(source.kind).drop_database(source, database)
