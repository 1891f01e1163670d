"""Point-in-time recovery of PostgreSQL sources: continuous WAL archiving and its limits.

Base backups are a retention series of their own per source (`base_min_count`,
`base_max_count`, each backup's own retentionDays); the dump rules of `retention`
(min/max count, GFS keep_daily...) do not apply to them: a GFS rule would keep a
months-old base backup, and with it every WAL segment since.
"""

from pathlib import Path

from pydantic import Field, model_validator

from app.config.common import Crontab, Group, SourceName


class PitrSettings(Group):
    # Configured PostgreSQL sources whose WAL is archived continuously (pg_receivewal).
    sources: list[SourceName] = []
    # The replication slot of a source is named <prefix><source> (dashes become _).
    slot_prefix: str = Field(default="backvault_", pattern=r"^[a-z0-9_]{1,40}$")
    # How often the segment being received (.partial) is shipped: the RPO, in seconds.
    partial_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    # pg_receivewal --synchronous: fsync each message and report it at once. Needed only if
    # the primary's synchronous_standby_names can name the receiver (e.g. '*'): commits
    # would otherwise wait up to a segment. Costs the primary throughput (see bench-pitr).
    receiver_synchronous: bool = False
    # Warn (health, notification) when a slot holds back more WAL than this on the primary.
    slot_lag_alert_bytes: int = Field(default=1024 ** 3, ge=1)
    # Spool of pg_receivewal: the segments being received, one folder per source.
    receive_dir: Path = Path("./pitr-spool")
    # The archiver lease: one replica receives a source's WAL; another takes over after it.
    lease_seconds: float = Field(default=30.0, ge=2, le=600)
    # Private PostgreSQL instances of a restore: their data directories go here.
    restore_dir: Path = Path("/var/tmp/backvault-pitr")
    # PostgreSQL refuses to run as root: the OS user of a private instance when root.
    run_user: str = Field(default="postgres", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # Estimate of replay speed for a restore's dry run, MB of WAL per second.
    replay_mb_per_second: float = Field(default=50.0, gt=0)
    # The seeded `pitr-basebackup` schedule: a new base backup of each PITR source, so a
    # restore replays at most a week of WAL (and retention can let older WAL go).
    base_backup_schedule: Crontab = "0 1 * * 0"
    # Retention of base backups: the newest base_min_count good ones always stay (WAL is
    # useless without one), good ones beyond the newest base_max_count go.
    base_min_count: int = Field(default=2, ge=1, le=1000)
    base_max_count: int = Field(default=8, ge=1, le=1000)

    @model_validator(mode="after")
    def _base_min_below_max(self) -> "PitrSettings":
        if self.base_min_count > self.base_max_count:
            raise ValueError("pitr.base_min_count cannot exceed pitr.base_max_count")
        return self
