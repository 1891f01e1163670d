"""Issue 13 point 1: each new backup verified once written, a BackupVerification record per
verification, and the rolling re-verification of the due backups only."""

from datetime import timedelta

import httpx
import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI

from app.config import Settings
from app.models.backup import Backup, Verification, VerificationState
from app.models.common import utcnow
from app.models.job import JobKind, JobStatus
from app.models.job_params import ReverifyParams
from app.models.verification import BackupVerification
from app.services.catalog.queries import update_backup
from app.services.jobs.runner import JobRunner
from app.services.recoverability.verification import due_for_reverify
from tests.support.accounts import Account
from tests.support.drills import drill_settings, new_backup
from tests.support.jobs import wait_job
from tests.support.restore_safety import backup_of, flip_byte, stored_path

pytestmark = pytest.mark.usefixtures("source_databases")


async def _records(backup_id: str | PydanticObjectId) -> list[BackupVerification]:
    return await BackupVerification.find({"backupId": PydanticObjectId(backup_id)}).to_list()


async def test_a_new_backup_is_verified_right_after_it_completes(
        client: httpx.AsyncClient, admin: Account, viewer: Account) -> None:
    backup = await backup_of(client, admin, "pg")
    assert backup["verification"]["state"] == "passed"
    assert backup["verification"]["deep"] is True
    listed = await client.get(f"/api/backups/{backup['id']}/verifications",
                              headers=viewer.headers)
    assert listed.status_code == 200, listed.text
    (record,) = listed.json()
    assert (record["trigger"], record["kind"], record["result"]) == ("after_backup", "deep",
                                                                      "passed")
    assert record["bytesRead"] == backup["storedBytes"]
    assert record["problems"] == []
    assert record["source"] == "pg"
    # A manual verification adds its own record, newest first.
    asked = await client.post(f"/api/backups/{backup['id']}/verify", headers=admin.headers)
    assert asked.status_code == 202
    assert (await wait_job(client, admin.headers, asked.json()["id"]))["status"] == "completed"
    history = (await client.get(f"/api/backups/{backup['id']}/verifications",
                                headers=viewer.headers)).json()
    assert [r["trigger"] for r in history] == ["manual", "after_backup"]
    assert history[0]["jobId"] == asked.json()["id"]


async def test_a_damaged_backup_records_a_failed_verification(
        client: httpx.AsyncClient, admin: Account, viewer: Account, settings: Settings) -> None:
    backup = await backup_of(client, admin, "mongo")
    flip_byte(stored_path(settings, backup))
    asked = await client.post(f"/api/backups/{backup['id']}/verify", headers=admin.headers)
    assert (await wait_job(client, admin.headers, asked.json()["id"]))["status"] == "failed"
    newest = (await client.get(f"/api/backups/{backup['id']}/verifications",
                               headers=viewer.headers)).json()[0]
    assert (newest["trigger"], newest["result"]) == ("manual", "failed")
    assert any("SHA-256" in p for p in newest["problems"]), newest


async def test_quick_verification_after_backup_when_deep_is_off(settings: Settings) -> None:
    config = drill_settings(settings).model_copy(update={"verification": settings.verification
                                                         .model_copy(update={
                                                             "deep_after_backup": False})})
    backup = await new_backup(config, "drillpg")
    (record,) = await _records(backup.id)  # type: ignore[arg-type]
    assert (record.kind.value, record.result.value) == ("quick", "passed")
    off = config.model_copy(update={"verification": settings.verification.model_copy(
        update={"after_backup": False})})
    unverified = await new_backup(off, "drillpg")
    assert await _records(unverified.id) == []  # type: ignore[arg-type]
    assert unverified.verification.state is VerificationState.unverified


async def test_verification_history_needs_a_user_and_a_real_backup(
        client: httpx.AsyncClient, viewer: Account) -> None:
    missing = PydanticObjectId()
    assert (await client.get(f"/api/backups/{missing}/verifications",
                             headers=viewer.headers)).status_code == 404
    assert (await client.get("/api/backups/nope/verifications",
                             headers=viewer.headers)).status_code == 422
    assert (await client.get(f"/api/backups/{missing}/verifications")).status_code == 401


def _at(days_ago: float) -> Verification:
    return Verification(state=VerificationState.passed, checked_at=utcnow()
                        - timedelta(days=days_ago))


def test_due_selection_takes_the_due_then_the_oldest_checked() -> None:
    now = utcnow()
    backups = [Backup(admin=PydanticObjectId(), source=f"s{i}", verification=_at(days))
               for i, days in enumerate((40, 1, 10, 31))]
    backups.append(Backup(admin=PydanticObjectId(), source="never"))
    due = due_for_reverify(backups, 30, 0.0, now)
    assert [b.source for b in due] == ["never", "s0", "s3"]
    # A sampled fraction tops the run up with the oldest checked of the others.
    sampled = due_for_reverify(backups, 30, 0.8, now)
    assert [b.source for b in sampled] == ["never", "s0", "s3", "s2"]


@pytest.mark.usefixtures("empty_catalog")
async def test_the_rolling_job_re_verifies_the_due_ones_only(app: FastAPI,
                                                             settings: Settings) -> None:
    config = drill_settings(settings)
    due = await new_backup(config, "drillpg")
    fresh = await new_backup(config, "drillmongo")
    await update_backup(due, verification=_at(31))
    await update_backup(fresh, verification=_at(2))
    assert settings.verification.reverify_days == 30
    runner: JobRunner = app.state.runner
    # The default sample (5 % of 2 backups, rounded up: 1) is filled by the due one.
    assert runner.settings.verification.sample_fraction == 0.05
    job = await runner.submit(JobKind.reverify, ReverifyParams())
    assert job.id is not None
    finished = await runner.wait(job.id, 60)
    assert finished.status is JobStatus.completed, finished.error
    assert finished.result["verified"] == [str(due.id)]
    rolling = await BackupVerification.find({"jobId": job.id}).to_list()
    assert {r.trigger.value for r in rolling} == {"rolling"}
    assert [r.backup_id for r in rolling] == [due.id]
    reread = await Backup.get(due.id)
    assert reread is not None
    assert reread.verification.checked_at is not None
    assert reread.verification.checked_at > utcnow() - timedelta(minutes=5)
