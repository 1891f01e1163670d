"""Pruning of the catalog's history: finished jobs and schedule fires past history_days.

Kept whatever their age: queued and running jobs; each schedule's newest fire and that
fire's jobs (the schedule's status shows them as its last run); and the job that wrote a
backup still in the catalog (the backup names it as its jobId).
"""

from datetime import datetime, timedelta
from typing import Any

import structlog
from beanie import PydanticObjectId

from app.config import Settings
from app.models.backup import Backup
from app.models.common import utcnow
from app.models.drill import RestoreDrill
from app.models.job import FINISHED_JOB_STATUSES, BackupJob
from app.models.schedule import Schedule, ScheduleFire
from app.models.verification import BackupVerification

log = structlog.get_logger(__name__)

# Deletions go in batches of ids: one huge `$in` is slow on FerretDB and large on the wire.
BATCH = 500


async def _newest_fires() -> dict[PydanticObjectId, PydanticObjectId]:
    """Each existing schedule's newest fire: fire id -> schedule id."""
    newest: dict[PydanticObjectId, PydanticObjectId] = {}
    fires = ScheduleFire.get_pymongo_collection()
    async for schedule in Schedule.get_pymongo_collection().find({}, {"_id": 1}):
        fire = await fires.find_one({"scheduleId": schedule["_id"]}, {"_id": 1},
                                    sort=[("fireTime", -1)])
        if fire is not None:
            newest[fire["_id"]] = schedule["_id"]
    return newest


def old_jobs_query(cutoff: datetime) -> dict[str, Any]:
    """Finished jobs that ended before cutoff (or, lacking an end, were last updated then)."""
    return {"status": {"$in": [s.value for s in FINISHED_JOB_STATUSES]},
            "$or": [{"finishedAt": {"$lt": cutoff}},
                    {"finishedAt": None, "updatedAt": {"$lt": cutoff}}]}


async def _old_job_ids(cutoff: datetime, keep_fires: set[PydanticObjectId]
                       ) -> list[PydanticObjectId]:
    candidates: dict[PydanticObjectId, dict[str, Any]] = {}
    async for raw in BackupJob.get_pymongo_collection().find(old_jobs_query(cutoff),
                                                             {"_id": 1, "fireId": 1}):
        if raw.get("fireId") not in keep_fires:
            candidates[raw["_id"]] = raw
    if candidates:
        # One pass over the backups that name a job, not an `$in` per batch of
        # candidates: FerretDB would scan the collection once per batch.
        async for raw in Backup.get_pymongo_collection().find({"jobId": {"$ne": None}},
                                                              {"jobId": 1}):
            candidates.pop(raw["jobId"], None)
    return list(candidates)


async def _old_records(cutoff: datetime) -> dict[Any, list[PydanticObjectId]]:
    """Verification and drill records older than cutoff; each source's newest drill of
    each mode (dump, content, PITR) stays (health reads them)."""
    verifications = [raw["_id"] async for raw in BackupVerification.get_pymongo_collection(
        ).find({"at": {"$lt": cutoff}}, {"_id": 1})]
    newest: dict[tuple[str, str], tuple[datetime, PydanticObjectId]] = {}
    old: list[PydanticObjectId] = []
    async for raw in RestoreDrill.get_pymongo_collection().find(
            {}, {"_id": 1, "source": 1, "startedAt": 1, "mode": 1}):
        source = (raw.get("source", ""), raw.get("mode", "database"))
        this = (raw.get("startedAt") or cutoff, raw["_id"])
        kept = newest.get(source)
        if kept is None or this[0] > kept[0]:
            newest[source], older = this, kept
        else:
            older = this
        if older is not None and older[0] < cutoff:
            old.append(older[1])
    return {BackupVerification: verifications, RestoreDrill: old}


async def _delete_ids(collection: Any, ids: list[PydanticObjectId]) -> int:
    deleted = 0
    for start in range(0, len(ids), BATCH):
        result = await collection.delete_many({"_id": {"$in": ids[start:start + BATCH]}})
        deleted += int(result.deleted_count)
    return deleted


async def prune_history(settings: Settings, *, dry_run: bool = False,
                        now: datetime | None = None) -> dict[str, Any]:
    """Delete finished jobs and schedule fires older than retention.history_days."""
    now = now or utcnow()
    days = settings.retention.history_days
    cutoff = now - timedelta(days=days)
    newest = await _newest_fires()
    fire_ids = [raw["_id"] async for raw in ScheduleFire.get_pymongo_collection().find(
        {"fireTime": {"$lt": cutoff}}, {"_id": 1}) if raw["_id"] not in newest]
    job_ids = await _old_job_ids(cutoff, set(newest))
    records = await _old_records(cutoff)
    if dry_run:
        jobs_gone, fires_gone = len(job_ids), len(fire_ids)
        records_gone = sum(len(ids) for ids in records.values())
    else:
        jobs_gone = await _delete_ids(BackupJob.get_pymongo_collection(), job_ids)
        fires_gone = await _delete_ids(ScheduleFire.get_pymongo_collection(), fire_ids)
        records_gone = sum([await _delete_ids(model.get_pymongo_collection(), ids)
                            for model, ids in records.items()])
    result = {"historyDays": days, "cutoff": cutoff.isoformat(), "dryRun": dry_run,
              "jobsDeleted": jobs_gone, "firesDeleted": fires_gone,
              "verificationAndDrillRecordsDeleted": records_gone}
    log.info("history pruned", **{k: v for k, v in result.items() if k != "cutoff"})
    return result
