"""Retention decisions: minimum kept whatever the age, maximum count, GFS, failed backups."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from beanie import PydanticObjectId
from pydantic import ValidationError

from app.config import PitrSettings, RetentionSettings, Settings
from app.models.backup import Backup, BackupStatus, Verification, VerificationState
from app.services.catalog.retention import (
    Decision,
    decide,
    decide_series,
    decide_source,
    series_policy,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ADMIN = PydanticObjectId()


def backup(days_old: float, status: str = "completed", retention: int = 7,
           verification: VerificationState = VerificationState.unverified) -> Backup:
    made: Backup = Backup.model_construct(
        id=PydanticObjectId(), admin=ADMIN, source="pg", status=BackupStatus(status),
        retention_days=retention, created_at=NOW - timedelta(days=days_old),
        verification=Verification(state=verification), deleting_since=None,
        deletion_reason=None, safety_for=None, format_chain=["pgdump", "zst", "age"])
    return made


def why_kept(decision: Decision, kept: Backup) -> str:
    assert kept.id is not None
    return decision.protect[kept.id][0]


def base(days_old: float, retention: int = 7) -> Backup:
    """A PITR base backup of the same source."""
    made = backup(days_old, retention=retention)
    made.format_chain = ["pgbasetar", "zst", "age"]
    return made


def settings(retention: dict[str, int], **pitr: Any) -> Settings:
    return Settings(_env_file=None, retention=RetentionSettings(**retention),
                    pitr=PitrSettings(**pitr))


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


def test_nightly_dumps_never_push_out_the_newest_base_backup() -> None:
    # A weekly base backup 3 days old between 10 nightly dumps kept a year.
    dumps = [backup(d, retention=365) for d in range(10)]
    weekly = base(3.5)
    config = settings({"max_count": 5, "min_count": 3}, base_min_count=1, base_max_count=4)
    decision = decide_source([*dumps, weekly], config, NOW)
    assert set(decision.delete) == {b.id for b in dumps[5:]}  # 5 dumps, the base not among
    assert weekly.id not in decision.delete
    series = {name: [b.id for b in part] for name, part, _ in
              decide_series([*dumps, weekly], config, NOW)}
    assert series == {"dumps": [b.id for b in dumps], "pitrBase": [weekly.id]}


def test_base_backups_beyond_their_maximum_go_oldest_first() -> None:
    bases = [base(7 * w + 1, retention=365) for w in range(6)]
    config = settings({"max_count": 30, "min_count": 3}, base_min_count=2, base_max_count=4)
    decision = decide_source(bases, config, NOW)
    assert set(decision.delete) == {bases[4].id, bases[5].id}
    assert "beyond the newest 4 good base backups of its source" in why(decision, bases[4])


def test_newest_base_backups_stay_past_their_retention() -> None:
    bases = [base(30 + w) for w in range(4)]  # every one past its 7 days
    config = settings({"min_count": 0}, base_min_count=2)
    decision = decide_source(bases, config, NOW)
    assert set(decision.protect) == {bases[0].id, bases[1].id}
    assert "newest 2 good base backups (minimum)" in why_kept(decision, bases[0])
    assert set(decision.delete) == {bases[2].id, bases[3].id}


def test_a_base_backup_never_counts_toward_the_dump_minimum() -> None:
    dumps = [backup(20 + d) for d in range(3)]  # all expired
    newest = base(10)  # newer than every dump, expired too
    config = settings({"min_count": 3}, base_min_count=1)
    decision = decide_source([*dumps, newest], config, NOW)
    assert decision.delete == {}
    assert set(decision.protect) == {*(b.id for b in dumps), newest.id}


def test_dump_gfs_rules_do_not_keep_base_backups() -> None:
    bases = [base(10 * w + 10) for w in range(5)]
    config = settings({"min_count": 0, "keep_daily": 30, "keep_weekly": 10, "keep_monthly": 6,
                       "keep_yearly": 2}, base_min_count=1)
    policy_used = series_policy("pitrBase", config)
    assert (policy_used.keep_daily, policy_used.keep_monthly, policy_used.min_count) == (0, 0, 1)
    assert series_policy("dumps", config) == config.retention
    decision = decide_source(bases, config, NOW)
    assert set(decision.protect) == {bases[0].id}
    assert set(decision.delete) == {b.id for b in bases[1:]}


def test_trash_and_interrupted_deletion_apply_to_base_backups() -> None:
    trashed, cut_short, kept = base(40), base(2), base(30)
    trashed.status = BackupStatus.deleted
    trashed.deleted_at, trashed.deletion_reason = NOW - timedelta(days=8), "deleted by root"
    trashed.updated_at = trashed.deleted_at
    cut_short.deleting_since, cut_short.deletion_reason = NOW, "deleted by request"
    decision = decide_source([trashed, cut_short, kept], settings({}), NOW)
    assert "in the trash since" in why(decision, trashed)[0]
    assert "finishing an interrupted deletion" in why(decision, cut_short)[0]
    assert set(decision.protect) == {kept.id}  # expired, but the only good one left


@pytest.mark.parametrize("values", [{"base_min_count": 0}, {"base_max_count": 0},
                                    {"base_min_count": 5, "base_max_count": 4}])
def test_base_counts_are_checked(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PitrSettings(**values)


def test_base_counts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_PITR__BASE_MIN_COUNT", "3")
    monkeypatch.setenv("BACKUP_PITR__BASE_MAX_COUNT", "5")
    loaded = Settings(_env_file=None)
    assert (loaded.pitr.base_min_count, loaded.pitr.base_max_count) == (3, 5)
    assert (PitrSettings().base_min_count, PitrSettings().base_max_count) == (2, 8)
