"""Notifications reach a real SMTP server and an HTTP endpoint; a broken one changes nothing."""

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr

from app.config import Settings
from app.models.backup import Backup, BackupStatus
from app.models.job import BackupJob, JobKind, JobStatus
from app.models.requests import DatabaseBackupCreate
from app.services.databases.backup import submit_database_backup
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.runner import JobRunner
from app.services.ops.notify import job_listener
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.receivers import HttpReceiver, MailBox, free_port
from tests.support.settings import PG_URI

pytestmark = pytest.mark.usefixtures("source_databases")


def notifying(settings: Settings, *urls: str, **switches: Any) -> JobRunner:
    changed = settings.model_copy(update={
        "notifications": settings.notifications.model_copy(update={
            "urls": [SecretStr(u) for u in urls], "timeout_seconds": 10, **switches})})
    runner = JobRunner(changed, LocalStorage(changed.storage.local_dir), JOB_HANDLERS,
                       replica_id="notify-test", runs_own_jobs=True)
    runner.finish_listeners.append(job_listener(changed))
    return runner


async def run(runner: JobRunner, job: BackupJob) -> BackupJob:
    return await runner.run_now(job)


async def wait_for(items: list[Any], count: int) -> None:
    for _ in range(100):
        if len(items) >= count:
            return
        await asyncio.sleep(0.05)


async def test_backup_success_and_failure_are_mailed_and_posted(settings: Settings,
                                                                admin: Account) -> None:
    dead_port = free_port()  # nothing listens there: this notifier fails every time
    with MailBox() as mail, HttpReceiver() as hook:
        runner = notifying(settings, mail.url(), hook.url(), f"json://127.0.0.1:{dead_port}/")
        job = await submit_database_backup(runner, DatabaseBackupCreate(source="pg"),
                                           admin.user.id)
        done = await run(runner, job)
        assert done.status is JobStatus.completed  # the dead notifier did not fail it
        await wait_for(mail.messages, 1)
        assert [m["Subject"] for m in mail.messages] == ["Backvault: backup of pg done"]
        text = mail.text_of(mail.messages[0])
        assert f"backup: {done.result['backupId']}" in text
        assert hook.bodies[0]["title"] == "Backvault: backup of pg done"
        assert hook.bodies[0]["type"] == "info"

        # A failing backup: the message says so and carries the error, not the source URI.
        broken = runner.settings.model_copy(update={"sources": [
            s.model_copy(update={"uri": SecretStr(PG_URI.rsplit("/", 1)[0] + "/no_such_db")})
            if s.name == "pg" else s for s in runner.settings.sources]})
        runner.settings = broken
        job = await submit_database_backup(runner, DatabaseBackupCreate(source="pg"),
                                           admin.user.id)
        failed = await run(runner, job)
        assert failed.status is JobStatus.failed
        await wait_for(mail.messages, 2)
        assert mail.messages[1]["Subject"] == "Backvault: backup of pg failed"
        body = mail.text_of(mail.messages[1])
        assert "no_such_db" in body  # the error names the database
        assert PG_URI.split("@")[0] not in body  # never the credentials
        assert hook.bodies[1]["type"] == "failure"


async def test_switches_and_reports(settings: Settings, admin: Account) -> None:
    with HttpReceiver() as hook:
        quiet = notifying(settings, hook.url(), on_success=False)
        job = await submit_database_backup(quiet, DatabaseBackupCreate(source="pg"),
                                           admin.user.id)
        assert (await run(quiet, job)).status is JobStatus.completed
        assert hook.bodies == []  # on_success off

        runner = notifying(settings, hook.url())
        report = await runner.submit(JobKind.stats_report, {})
        assert (await run(runner, report)).status is JobStatus.completed
        await wait_for(hook.bodies, 1)
        assert hook.bodies[0]["title"] == "Backvault: weekly backup report"
        assert "Backups in the last 7 days:" in hook.bodies[0]["message"]


@pytest.mark.usefixtures("empty_catalog")
async def test_health_warning_is_notified(settings: Settings, admin: Account) -> None:
    # More than three failures in seven days is at least a warning.
    for _ in range(4):
        await Backup(admin=admin.user.id, source="pg", status=BackupStatus.failed).insert()
    with HttpReceiver() as hook:
        runner = notifying(settings, hook.url())
        check = await runner.run_now(await runner.submit(JobKind.health_check, {}))
        assert check.status is JobStatus.completed
        status = check.result["status"]
        assert status in ("warning", "critical")
        await wait_for(hook.bodies, 1)
        assert hook.bodies[0]["title"] == f"Backvault health: {status}"
        assert "Multiple backup failures in last week (4)" in hook.bodies[0]["message"]


async def test_a_url_apprise_cannot_read_does_not_silence_the_others(
        settings: Settings, admin: Account) -> None:
    # Found in review: logging the unreadable URL raised, so no URL got the message.
    for _ in range(4):  # a warning at least, so the health check notifies
        await Backup(admin=admin.user.id, source="pg", status=BackupStatus.failed).insert()
    with HttpReceiver() as hook:
        runner = notifying(settings, "nosuchscheme://nowhere", hook.url())
        check = await runner.run_now(await runner.submit(JobKind.health_check, {}))
        assert check.status is JobStatus.completed
        await wait_for(hook.bodies, 1)
        assert hook.bodies[0]["title"].startswith("Backvault health")
