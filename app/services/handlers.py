"""Which function runs each kind of job."""

from app.models.job import JobKind
from app.services.backups import run_database_backup
from app.services.jobs import Handler
from app.services.restores import run_restore
from app.services.verify import run_verify

JOB_HANDLERS: dict[JobKind, Handler] = {
    JobKind.database: run_database_backup,
    JobKind.verify: run_verify,
    JobKind.restore: run_restore,
}
