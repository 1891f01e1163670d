"""Notifications through apprise URLs: one message per event the settings turn on.

A notifier that fails or hangs is logged and never changes the outcome of the
work it reports on.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from app.config import NotificationSettings, Settings
from app.models.job import BackupJob, JobKind, JobStatus

log = structlog.get_logger(__name__)
# apprise logs the URLs it sends to (credentials included) at info level.
logging.getLogger("apprise").setLevel(logging.ERROR)


class Event(StrEnum):
    backup_succeeded = "backup_succeeded"
    backup_failed = "backup_failed"
    restore_done = "restore_done"
    cleanup_done = "cleanup_done"
    stats_report = "stats_report"
    health = "health"


SWITCH = {
    Event.backup_succeeded: "on_success",
    Event.backup_failed: "on_failure",
    Event.restore_done: "on_restore",
    Event.cleanup_done: "on_cleanup",
    Event.stats_report: "on_stats_report",
    Event.health: "on_health",
}


@dataclass(frozen=True)
class Message:
    event: Event
    title: str
    body: str
    failure: bool = False


def enabled(settings: NotificationSettings, event: Event) -> bool:
    return bool(settings.urls) and bool(getattr(settings, SWITCH[event]))


def _sender(urls: list[str], message: Message) -> tuple[Any, Any]:
    """An apprise sender for the URLs and the message type; blocking (import, plugins)."""
    import apprise  # ~20 MB of plugins: loaded only by a process that notifies

    sender = apprise.Apprise()
    for url in urls:
        if not sender.add(url):
            log.warning("notification URL not understood by apprise",
                        notify_event=message.event.value)
    return sender, apprise.NotifyType.FAILURE if message.failure else apprise.NotifyType.INFO


async def send(settings: Settings, message: Message) -> bool:
    """Deliver to every URL; True when all took it. Never raises."""
    config = settings.notifications
    if not enabled(config, message.event):
        return False
    urls = [url.get_secret_value() for url in config.urls]
    try:
        # The first import of apprise and of its plugins takes ~0.2 s: in a thread too.
        sender, kind = await asyncio.to_thread(_sender, urls, message)
        delivered = await asyncio.wait_for(
            asyncio.to_thread(sender.notify, body=message.body, title=message.title,
                              notify_type=kind),
            config.timeout_seconds)
    except Exception as exc:
        log.warning("notification failed", notify_event=message.event.value,
                    error=type(exc).__name__)
        return False
    if not delivered:
        log.warning("notification not delivered to every URL", notify_event=message.event.value)
    return bool(delivered)


def _lines(fields: dict[str, Any]) -> str:
    return "\n".join(f"{name}: {value}" for name, value in fields.items() if value is not None)


def job_message(job: BackupJob) -> Message | None:
    """What to say about a finished job, if anything."""
    ok = job.status is JobStatus.completed
    facts: dict[str, Any] = {"job": str(job.id), "kind": job.kind.value, "source": job.source,
                             "trigger": job.trigger.value, "status": job.status.value}
    if job.kind in (JobKind.database, JobKind.content, JobKind.full):
        result = job.result
        partial = bool(result.get("partial")) or bool(result.get("failedItems"))
        facts |= {"backup": result.get("backupId"), "stored bytes": result.get("storedBytes"),
                  "error": job.error}
        if ok and not partial:
            return Message(Event.backup_succeeded, f"Backvault: backup of {job.source} done",
                           _lines(facts))
        what = "finished with errors" if ok else job.status.value
        return Message(Event.backup_failed, f"Backvault: backup of {job.source} {what}",
                       _lines(facts), failure=True)
    if job.kind is JobKind.restore:
        facts |= {"backup": str(job.backup_id), "error": job.error}
        if ok:
            facts["target"] = job.result.get("targetDatabase")
            return Message(Event.restore_done, f"Backvault: restore of {job.source} done",
                           _lines(facts))
        return Message(Event.backup_failed, f"Backvault: restore of {job.source} "
                       f"{job.status.value}", _lines(facts), failure=True)
    if job.kind is JobKind.cleanup and ok:
        facts |= {"deleted": job.result.get("deletedCount"),
                  "freed bytes": job.result.get("freedBytes")}
        return Message(Event.cleanup_done, "Backvault: retention cleanup done", _lines(facts))
    if job.kind is JobKind.stats_report and ok:
        return Message(Event.stats_report, "Backvault: weekly backup report",
                       str(job.result.get("report", "")))
    if job.kind is JobKind.health_check and ok:
        status = job.result.get("status")
        if status in ("warning", "critical"):
            issues = "\n".join(f"- {issue}" for issue in job.result.get("issues", []))
            return Message(Event.health, f"Backvault health: {status}", issues,
                           failure=status == "critical")
        return None
    if not ok:
        return Message(Event.backup_failed, f"Backvault: {job.kind.value} job "
                       f"{job.status.value}", _lines(facts | {"error": job.error}),
                       failure=True)
    return None


def job_listener(settings: Settings) -> Callable[[BackupJob], Awaitable[None]]:
    """A JobRunner finish listener that notifies about each finished job."""

    async def notify_job(job: BackupJob) -> None:
        message = job_message(job)
        if message is not None:
            await send(settings, message)

    return notify_job
