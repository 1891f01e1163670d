"""Issue 10, finding 5: verify and the restore plan tell a wrong key from a bad backup,
report the recorded verification, check the checksum before touching anything, and a
PostgreSQL deep verify counts rows. Real backups on the real PostgreSQL and FerretDB."""

import asyncpg
import httpx
import pytest
from beanie import PydanticObjectId

from app.config import Settings
from app.models.backup import ContentEntry, VerificationState
from app.models.job import JobKind, JobStatus
from app.models.requests import RestoreRequest
from app.services.artifacts.read import IdentityMismatchError
from app.services.databases.base import SourceError
from app.services.databases.postgres.archive import CopyRowCounter
from app.services.databases.restore import plan_restore
from app.services.databases.verify import verify
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.runner import JobRunner, Progress
from app.services.storage import LocalStorage
from tests.support.accounts import Account
from tests.support.data import pg_snapshot
from tests.support.restore_safety import (
    backup_count,
    backup_document,
    backup_of,
    flip_byte,
    get_backup,
    restore_call,
    stored_path,
    wrong_identity,
)
from tests.support.settings import RUN, pg_uri

pytestmark = pytest.mark.usefixtures("source_databases")


async def _verify(client: httpx.AsyncClient, admin: Account, backup_id: str) -> dict[str, object]:
    response = await client.post(f"/api/backups/{backup_id}/verify?wait=true",
                                 headers=admin.headers)
    assert response.status_code == 200, response.text
    job: dict[str, object] = response.json()
    return job


@pytest.mark.parametrize("source", ["pg", "mongo"])
async def test_wrong_identity_is_a_configuration_error_not_a_bad_backup(
        client: httpx.AsyncClient, admin: Account, settings: Settings, source: str) -> None:
    backup = await backup_of(client, admin, source)
    assert (await _verify(client, admin, backup["id"]))["status"] == "completed"
    before = (await get_backup(client, admin, backup["id"]))["verification"]
    assert before["state"] == "passed"

    wrong = wrong_identity(settings)
    storage = LocalStorage(wrong.storage.local_dir)
    runner = JobRunner(wrong, storage, JOB_HANDLERS, replica_id=f"verify-safety-{RUN}",
                       runs_own_jobs=True)
    job = await runner.submit(JobKind.verify, {}, source=source,
                              backup_id=PydanticObjectId(backup["id"]))
    finished = await runner.run_now(job)
    assert finished.status is JobStatus.failed
    assert "configured identity does not match a recipient" in str(finished.error)
    assert "configuration error" in str(finished.error)
    assert backup["recipients"][0] in str(finished.error)  # names what it is encrypted to
    assert (await get_backup(client, admin, backup["id"]))["verification"] == before

    # The plan says so without reading the object; a real restore refuses before anything.
    plan = await plan_restore(wrong, storage, await backup_document(backup["id"]),
                              RestoreRequest(target_database=f"bv_never_{RUN}", dry_run=True))
    assert plan.identity_ok is False
    assert plan.artifact_ok is True
    with pytest.raises(IdentityMismatchError, match="identity does not match a recipient"):
        await plan_restore(wrong, storage, await backup_document(backup["id"]),
                           RestoreRequest(target_database=f"bv_never_{RUN}"))


async def test_wrong_identity_on_a_damaged_backup_still_fails_it(
        client: httpx.AsyncClient, admin: Account, settings: Settings) -> None:
    backup = await backup_of(client, admin, "mongo")
    flip_byte(stored_path(settings, backup))
    wrong = wrong_identity(settings)
    result = await verify(wrong, LocalStorage(wrong.storage.local_dir),
                          PydanticObjectId(backup["id"]), Progress())
    assert result.state is VerificationState.failed
    assert result.sha256_ok is False
    assert "cannot be opened" in str(result.error)


async def test_dry_run_of_a_backup_that_failed_verification(
        client: httpx.AsyncClient, admin: Account, superadmin: Account,
        settings: Settings) -> None:
    backup = await backup_of(client, admin, "pg")
    flip_byte(stored_path(settings, backup))
    verified = await _verify(client, admin, backup["id"])
    assert verified["status"] == "failed"
    target = f"bv_failedverify_{RUN}"
    plan = await restore_call(client, superadmin, backup["id"],
                              {"targetDatabase": target, "dryRun": True})
    assert plan.status_code == 200, plan.text
    assert plan.json()["artifactOk"] is False
    assert plan.json()["verification"]["state"] == "failed"
    assert plan.json()["verification"]["checkedAt"] is not None
    assert any("failed verification" in w for w in plan.json()["warnings"])
    refused = await restore_call(client, superadmin, backup["id"], {"targetDatabase": target})
    assert refused.status_code == 409, refused.text
    assert "failed verification" in refused.json()["error"]["message"]


async def test_damaged_header_makes_the_dry_run_say_so(
        client: httpx.AsyncClient, admin: Account, superadmin: Account,
        settings: Settings) -> None:
    backup = await backup_of(client, admin, "mongo")
    path = stored_path(settings, backup)
    flip_byte(path, path.read_bytes().index(b"\n--- ") + 8)  # inside the header's MAC
    plan = await restore_call(client, superadmin, backup["id"],
                              {"targetDatabase": f"bv_badheader_{RUN}", "dryRun": True})
    assert plan.json()["artifactOk"] is False
    assert plan.json()["identityOk"] is False
    assert any("header is damaged" in w for w in plan.json()["warnings"])


async def test_same_size_corruption_fails_before_the_safety_backup(
        client: httpx.AsyncClient, admin: Account, superadmin: Account,
        settings: Settings) -> None:
    backup = await backup_of(client, admin, "pg")
    target = f"bv_corrupt_{RUN}"
    first = await restore_call(client, superadmin, backup["id"], {"targetDatabase": target})
    assert first.json()["status"] == "completed", first.json()
    conn = await asyncpg.connect(pg_uri(target))
    await conn.execute("INSERT INTO authors (name) VALUES ('must survive')")
    await conn.close()
    target_before = await pg_snapshot(pg_uri(target))
    flip_byte(stored_path(settings, backup))
    count = await backup_count()

    plan = await restore_call(client, superadmin, backup["id"],
                              {"targetDatabase": target, "dropExisting": True, "dryRun": True})
    assert plan.json()["safetyBackup"] is True  # a real restore would take one...
    done = await restore_call(client, superadmin, backup["id"],
                              {"targetDatabase": target, "dropExisting": True,
                               "confirm": target})
    job = done.json()
    assert job["status"] == "failed", job
    assert "SHA-256 of the stored object differs" in job["error"]
    assert "no safety backup was taken" in job["error"]
    assert await backup_count() == count  # ...but it failed before taking it
    assert await pg_snapshot(pg_uri(target)) == target_before
    record = await get_backup(client, admin, backup["id"])
    assert record["verification"]["state"] == "failed"  # damage proven, so recorded
    assert record["status"] == "restored"  # from the first restore; unchanged


async def test_postgres_deep_verify_counts_rows(client: httpx.AsyncClient, admin: Account,
                                                settings: Settings) -> None:
    backup = await backup_of(client, admin, "pg")
    manifest_counts = {c["name"]: c["count"] for c in backup["contents"]}
    assert manifest_counts == {"public.authors": 4, "public.posts": 500,
                               "other.Mixed Case": 3}
    job = await _verify(client, admin, backup["id"])
    assert job["status"] == "completed", job
    record = await get_backup(client, admin, backup["id"])
    verified = {c["name"]: c["count"] for c in record["verification"]["contents"]}
    assert verified == manifest_counts
    assert record["verification"]["deep"] is True

    # A manifest that disagrees with the archive fails, naming the table and both counts.
    document = await backup_document(backup["id"])
    document.contents = [ContentEntry(name=c.name, bytes=c.bytes,
                                      count=499 if c.name == "public.posts" else c.count)
                         for c in document.contents]
    await document.save()
    result = await verify(settings, LocalStorage(settings.storage.local_dir),
                          PydanticObjectId(backup["id"]), Progress())
    assert result.state is VerificationState.failed
    assert result.sha256_ok is True
    assert "table public.posts: 500 rows in the archive, 499 in the manifest" in str(
        result.error)


def test_row_counter_is_indifferent_to_chunk_boundaries() -> None:
    """pg_restore's SQL arrives in arbitrary pieces; a long row is never held whole."""
    sql = (b"SET client_encoding = 'UTF8';\n"
           b"COPY public.authors (id, name) FROM stdin;\n1\tAda\n2\t\\\\.\n3\tx\\nq\n\\.\n"
           b'COPY other."Mixed ""Case" (k, v) FROM stdin;\n\\.\n'
           b"SELECT pg_catalog.setval('public.authors_id_seq', 3, true);\n"
           b"COPY public.big (b) FROM stdin;\n" + b"x" * 300_000 + b"\ny\n\\.\n")
    expected = {"public.authors": 3, 'other.Mixed "Case': 0, "public.big": 2}
    for step in (1, 2, 3, 7, 4096, len(sql)):
        counter = CopyRowCounter()
        for at in range(0, len(sql), step):
            counter.feed(sql[at:at + step])
            assert len(counter.pending) <= CopyRowCounter.LINE_LIMIT
        assert counter.finish() == expected
    cut = CopyRowCounter()
    cut.feed(sql[:-4])
    with pytest.raises(SourceError, match="public.big is cut short"):
        cut.finish()
