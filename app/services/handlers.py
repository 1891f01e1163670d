"""Which function runs each kind of job."""

from app.models.job import JobKind
from app.services.backups import run_database_backup
from app.services.content_backups import run_content_backup, run_full_backup
from app.services.content_restore import run_content_import
from app.services.jobs import Handler
from app.services.reports import run_health_check, run_stats_report
from app.services.restores import run_restore
from app.services.retention import run_cleanup
from app.services.verify import run_verify

JOB_HANDLERS: dict[JobKind, Handler] = {
    JobKind.database: run_database_backup,
    JobKind.verify: run_verify,
    JobKind.restore: run_restore,
    JobKind.cleanup: run_cleanup,
    JobKind.stats_report: run_stats_report,
    JobKind.health_check: run_health_check,
    JobKind.content: run_content_backup,
    JobKind.full: run_full_backup,
    JobKind.content_import: run_content_import,
}
