"""What health reports about WAL archiving: read from each archiver's lease, so every
replica answers the same without touching the source or the WAL records."""

from datetime import UTC

from app.config import Settings
from app.models.common import utcnow
from app.services.pitr import lease


def lease_name(source: str) -> str:
    return f"pitr:{source}"


async def pitr_issues(settings: Settings) -> dict[str, str]:
    """By PITR source: why its archiving needs a look (not running on any replica, the
    slot holding too much WAL, a broken WAL chain, the receiver failing)."""
    issues: dict[str, str] = {}
    for source in settings.pitr.sources:
        held = await lease.holder(lease_name(source))
        until = held.get("until") if held else None
        if held is None or until is None or \
                until.replace(tzinfo=until.tzinfo or UTC) < utcnow():
            issues[source] = "WAL archiving is not running on any replica"
            continue
        status = held.get("status") or {}
        if status.get("chainBroken"):
            issues[source] = "the WAL chain since the newest base backup has a gap"
        elif status.get("lagAlert"):
            issues[source] = (f"the replication slot holds {status.get('lagBytes')} bytes "
                              "of WAL on the primary")
        elif status.get("lastError") and not status.get("holding"):
            issues[source] = f"the WAL receiver fails: {status['lastError']}"
    return issues
