"""open_runtime(): the catalog, storage targets and job runner the app and the CLI share."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from app.config import Settings
from app.logs import configure_logging
from app.services.access.auth import bootstrap_superadmin
from app.services.catalog import managed_sources
from app.services.catalog.db import MongoClient, open_catalog
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.runner import JobRunner
from app.services.ops.notify import job_listener
from app.services.storage import StorageTargets, targets_from_settings

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    mongo: MongoClient
    targets: StorageTargets
    runner: JobRunner


@asynccontextmanager
async def open_runtime(settings: Settings, *, runs_own_jobs: bool = False,
                       bootstrap_admin: bool = False) -> AsyncIterator[Runtime]:
    """Open the catalog, prepare the storage targets and build the job runner (not started);
    everything is stopped and closed on exit.

    `runs_own_jobs`: the CLI's way (see JobRunner). `bootstrap_admin`: create the configured
    superadmin if none exists (the app does; the CLI never creates users behind one's back)."""
    configure_logging(settings.system.log_level)
    mongo = await open_catalog(settings)
    try:
        await managed_sources.refresh(settings)
        targets = targets_from_settings(settings)
        await targets.prepare()
        runner = JobRunner(settings, targets.default, JOB_HANDLERS,
                           runs_own_jobs=runs_own_jobs, targets=targets)
        runner.finish_listeners.append(job_listener(settings))
        if bootstrap_admin:
            created = await bootstrap_superadmin(settings)
            if created is not None:
                log.info("bootstrap superadmin created", username=created.username)
        try:
            yield Runtime(settings, mongo, targets, runner)
        finally:
            await runner.stop()
            await targets.close()
    finally:
        await mongo.close()
