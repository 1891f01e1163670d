"""The table `make bench-pitr` prints and writes to bench/results/pitr.md."""

from typing import Any


def table(result: dict[str, Any], seconds: int) -> str:
    overhead = 100 * (1 - result["tps_with"] / result["tps_without"])
    theirs = 100 * (1 - result["tps_with_pgbackrest"] / result["tps_without"])
    bare = 100 * (1 - result["tps_with_bare_receiver"] / result["tps_without"])
    ratio = result["restore_s"] / result["pgbackrest_restore_s"]
    runs = len(result["tps_runs"]["tps_without"])
    cpu = result["archive_cpu_s_per_gb"]
    return "\n".join([
        "| measure | value | goal |", "|---|---|---|",
        f"| RPO, primary killed (median of {len(result['rpo_trials_s'])}) | "
        f"{result['rpo_s']:.4f} s | < 60 s |",
        f"| pgbench tps without / with archiving (medians) | {result['tps_without']:.0f} / "
        f"{result['tps_with']:.0f} ({overhead:.1f}% cost) | < 5% |",
        f"| the same with pgBackRest's archive_command instead | "
        f"{result['tps_with_pgbackrest']:.0f} ({theirs:.1f}% cost) | |",
        f"| the same with a bare pg_receivewal alone (nothing shipped) | "
        f"{result['tps_with_bare_receiver']:.0f} ({bare:.1f}% cost) | |",
        f"| archiving CPU per GB of WAL (walsender, archiver and its children, receiver, "
        f"shipping; medians): Backvault / pgBackRest / bare pg_receivewal | "
        f"{cpu['with']:.1f} s / {cpu['with_pgbackrest']:.1f} s / "
        f"{cpu['with_bare_receiver']:.1f} s | |",
        f"| spread of the runs without archiving (stdev of {runs} runs of {seconds} s) | "
        f"{result['tps_without_stdev_pct']:.1f}% | |",
        f"| full backup: Backvault / pgBackRest | {result['base_backup_s']:.1f} s / "
        f"{result['pgbackrest_backup_s']:.1f} s | |",
        f"| restore to a time (scale {result['scale']}, {result['wal_mb']} MB WAL): "
        f"Backvault / pgBackRest | {result['restore_s']:.1f} s / "
        f"{result['pgbackrest_restore_s']:.1f} s ({ratio:.2f}x; same rows: "
        f"{result['same_rows']}) | within 1.2x |", ""])
