"""Which function runs each kind of job."""

from typing import Any

from app.models.job import JobKind
from app.models.job_params import CleanupParams, params_of
from app.services.catalog.rebuild import run_catalog_rebuild
from app.services.catalog.reports import run_health_check, run_stats_report
from app.services.catalog.retention import run_cleanup
from app.services.content.backup import run_content_backup, run_full_backup
from app.services.content.restore import run_content_import
from app.services.databases.backup import run_database_backup
from app.services.databases.restore import run_restore
from app.services.databases.verify import run_verify
from app.services.jobs.history import prune_history
from app.services.jobs.runner import Handler, JobContext
from app.services.ops.audit import prune_audit
from app.services.pitr.basebackup import run_pitr_basebackup
from app.services.pitr.restore import run_pitr_restore
from app.services.pitr.verify import run_pitr_verify
from app.services.recoverability.drills import run_restore_drill
from app.services.recoverability.verification import run_reverify


async def run_cleanup_and_prune(ctx: JobContext) -> dict[str, Any]:
    """Pruning of old jobs, fires and audit records (on a cleanup of every source), then
    retention.

    Pruning goes first: it touches only the catalog, so a storage failure that fails
    retention does not stop the catalog from being pruned."""
    request = params_of(ctx.job, CleanupParams)
    pruned: dict[str, Any] = {}
    if request.source is None:
        ctx.progress.set_phase("history")
        pruned["history"] = await prune_history(ctx.settings, dry_run=request.dry_run)
        if not request.dry_run:
            pruned["auditRecordsPruned"] = await prune_audit(ctx.settings)
    return {**await run_cleanup(ctx), **pruned}


JOB_HANDLERS: dict[JobKind, Handler] = {
    JobKind.database: run_database_backup,
    JobKind.verify: run_verify,
    JobKind.restore: run_restore,
    JobKind.cleanup: run_cleanup_and_prune,
    JobKind.stats_report: run_stats_report,
    JobKind.health_check: run_health_check,
    JobKind.content: run_content_backup,
    JobKind.full: run_full_backup,
    JobKind.content_import: run_content_import,
    JobKind.restore_drill: run_restore_drill,
    JobKind.reverify: run_reverify,
    JobKind.catalog_rebuild: run_catalog_rebuild,
    JobKind.pitr_basebackup: run_pitr_basebackup,
    JobKind.pitr_restore: run_pitr_restore,
    JobKind.pitr_verify: run_pitr_verify,
}
