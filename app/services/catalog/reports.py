"""The scheduled weekly stats report and health check (their notifications follow the job)."""

from typing import Any

from app.services.catalog.stats import backup_health, backup_stats
from app.services.jobs.runner import JobContext
from app.services.ops.doctor import deep_health


async def run_stats_report(ctx: JobContext) -> dict[str, Any]:
    """The `stats_report` job handler: a plain-text summary for people."""
    stats = await backup_stats()
    health = await backup_health(ctx.settings)
    rate = stats.success_rate.success_rate
    lines = [
        f"Backups in the last 7 days: {stats.backups_last_7_days} "
        f"(last 24 hours: {stats.backups_last_24_hours})",
        f"All backups: {stats.total_backups}, by status: "
        + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_status.items())),
        f"Success rate: {'n/a' if rate is None else f'{rate:.1f}%'}",
        f"Stored: {stats.size.total_size_mb:.1f} MB",
        f"Newest backup: {stats.newest_backup or 'none'}",
        f"Health: {health.status.value}",
        *(f"- {issue}" for issue in health.issues),
    ]
    return {"report": "\n".join(lines), "totalBackups": stats.total_backups,
            "backupsLast7Days": stats.backups_last_7_days, "health": health.status.value}


async def run_health_check(ctx: JobContext) -> dict[str, Any]:
    """The `health_check` job handler: the health rules and every deep check (the runner's
    listener notifies when the status is warning or critical)."""
    report = await deep_health(ctx.settings, ctx.all_targets, await backup_health(ctx.settings))
    return report.model_dump(mode="json", by_alias=True)
