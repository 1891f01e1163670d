"""Which backups retention removes next, and when, if nothing else changes.

The rules are retention's own (`decide`): it is asked again at each future moment a
backup passes its retentionDays or leaves the trash, so GFS, the minimum and the
maximum count keep applying exactly as a cleanup at that moment would.
"""

from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from app.config import Settings
from app.models.backup import Backup, BackupStatus
from app.models.dashboard import ExpiringBackup
from app.services.catalog.retention import decide_source, unrestorable_bases

# Future moments asked per source: enough for the next few removals, bounded work.
MAX_PROBES_PER_SOURCE = 40


def _moments(backups: list[Backup], settings: Settings, now: datetime) -> list[datetime]:
    """When a backup's own clock runs out: its age limit, or its trash grace end."""
    found = set()
    for backup in backups:
        if backup.status is BackupStatus.deleted:
            since = backup.deleted_at or backup.updated_at
            at = since + timedelta(days=settings.retention.trash_days)
        else:
            at = backup.created_at + timedelta(days=backup.retention_days)
        if at > now:
            found.add(at)
    return sorted(found)[:MAX_PROBES_PER_SOURCE]


def _source_expiring(backups: list[Backup], settings: Settings, now: datetime, limit: int,
                     unrestorable: frozenset[str]) -> list[tuple[datetime, Backup, list[str]]]:
    out: list[tuple[datetime, Backup, list[str]]] = []
    by_id = {b.id: b for b in backups}
    seen: set[Any] = set()
    for at in [now, *_moments(backups, settings, now)]:
        # A hair after the moment: the age rule removes a backup once its limit is reached.
        decision = decide_source(backups, settings, at + timedelta(microseconds=1),
                                 unrestorable)
        for backup_id, reasons in decision.delete.items():
            if backup_id not in seen:
                seen.add(backup_id)
                out.append((at, by_id[backup_id], reasons))
        if len(out) >= limit:
            break
    return out


def next_cleanup(triggers: list[BaseTrigger], at: datetime) -> datetime | None:
    """The first fire at or after `at` of any of the cleanup schedules' triggers."""
    fires = [t.get_next_fire_time(None, at) for t in triggers]
    return min((f for f in fires if f is not None), default=None)


async def expiring_next(settings: Settings, now: datetime, cleanup_triggers: list[BaseTrigger],
                        limit: int = 10) -> list[ExpiringBackup]:
    """The `limit` backups retention removes first, soonest first, with the rule and time."""
    by_source: dict[str | None, list[Backup]] = {}
    async for backup in Backup.find({"status": {"$ne": BackupStatus.pending.value}}):
        by_source.setdefault(backup.source, []).append(backup)
    found = [entry for backups in by_source.values()
             for entry in _source_expiring(backups, settings, now, limit,
                                           await unrestorable_bases(backups))]
    found.sort(key=lambda e: (e[0], e[1].created_at))
    result = []
    for at, backup, reasons in found[:limit]:
        assert backup.id is not None
        result.append(ExpiringBackup(
            id=backup.id, source=backup.source, created_at=backup.created_at,
            stored_bytes=backup.stored_bytes, reason="; ".join(reasons), expires_at=at,
            cleanup_at=next_cleanup(cleanup_triggers, max(at, now))))
    return result
