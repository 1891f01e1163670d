"""Retention decisions: minimum kept whatever the age, maximum count, GFS, failed backups."""

from datetime import UTC, datetime, timedelta

from beanie import PydanticObjectId

from app.config import RetentionSettings
from app.models.backup import Backup, BackupStatus, Verification, VerificationState
from app.services.catalog.retention import Decision, decide

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ADMIN = PydanticObjectId()


def backup(days_old: float, status: str = "completed", retention: int = 7,
           verification: VerificationState = VerificationState.unverified) -> Backup:
    made: Backup = Backup.model_construct(
        id=PydanticObjectId(), admin=ADMIN, source="pg", status=BackupStatus(status),
        retention_days=retention, created_at=NOW - timedelta(days=days_old),
        verification=Verification(state=verification), deleting_since=None,
        deletion_reason=None)
    return made


def why(decision: Decision, gone: Backup) -> list[str]:
    assert gone.id is not None
    return decision.delete[gone.id]


def policy(**changes: int) -> RetentionSettings:
    return RetentionSettings(**{"days": 30, "max_count": 30, "min_count": 3, **changes})


def test_minimum_survives_when_every_backup_is_expired() -> None:
    old = [backup(100 + i) for i in range(5)]
    decision = decide(old, policy(), NOW)
    kept = {b.id for b in old[:3]}  # the three newest
    assert set(decision.protect) == kept
    assert set(decision.delete) == {b.id for b in old[3:]}
    assert all("minimum" in r[0] for r in decision.protect.values())
    assert all("past its retention of 7 days" in r[0] for r in decision.delete.values())


def test_young_backups_stay_and_the_minimum_is_not_exceeded() -> None:
    backups = [backup(1), backup(2), backup(10), backup(11)]
    decision = decide(backups, policy(min_count=1), NOW)
    assert set(decision.delete) == {backups[2].id, backups[3].id}
    assert decision.protect == {}


def test_failed_and_failed_verification_do_not_count_as_good() -> None:
    good = backup(50)
    failed = backup(40, "failed")
    broken = backup(30, verification=VerificationState.failed)
    fresh_failed = backup(1, "failed")
    decision = decide([good, failed, broken, fresh_failed], policy(min_count=1), NOW)
    assert set(decision.protect) == {good.id}
    assert set(decision.delete) == {failed.id, broken.id}
    assert "failed backup past its retention" in why(decision, failed)[0]


def test_maximum_count_removes_the_oldest_good_ones() -> None:
    backups = [backup(i, retention=365) for i in range(6)]
    decision = decide(backups, policy(max_count=4, min_count=2), NOW)
    assert set(decision.delete) == {backups[4].id, backups[5].id}
    assert "beyond the newest 4 good backups" in why(decision, backups[4])[0]


def test_restored_backups_are_good() -> None:
    backups = [backup(20, "restored"), backup(21)]
    decision = decide(backups, policy(min_count=1), NOW)
    assert set(decision.protect) == {backups[0].id}


def test_gfs_keeps_one_per_period_beyond_age() -> None:
    # Daily backups at midnight for 60 days, 7-day retention; 3 daily and 3 monthly.
    backups = [backup(d + 0.5) for d in range(60)]
    decision = decide(backups, policy(min_count=0, keep_daily=3, keep_monthly=3), NOW)
    kept_days = sorted(round((NOW - b.created_at).total_seconds() / 86400 - 0.5)
                       for b in backups if b.id not in decision.delete)
    # 0..6 are young; GFS monthly keeps the newest of November (day 0), October (day 23:
    # 2026-10-31) and September (day 54: 2026-09-30).
    assert kept_days == [0, 1, 2, 3, 4, 5, 6, 23, 54]
    reasons = [r for rs in decision.protect.values() for r in rs]
    assert any(r.startswith("GFS monthly") for r in reasons)


def test_interrupted_deletion_is_finished_even_for_a_protected_backup() -> None:
    only = backup(1)
    only.deleting_since = NOW - timedelta(hours=1)
    only.deletion_reason = "deleted by request"
    decision = decide([only], policy(), NOW)
    assert "finishing an interrupted deletion (deleted by request)" in why(decision, only)
