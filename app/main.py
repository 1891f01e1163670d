"""create_app(): the FastAPI application and its lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from app.api import audit as audit_api
from app.api import auth, backups, jobs, schedules, system
from app.api.audit_trail import AuditTrail
from app.api.limits import RequestLimits
from app.api.openapi import document_errors
from app.config import Settings, get_settings
from app.errors import install_error_handlers
from app.logs import configure_logging
from app.scheduler.service import ScheduleService
from app.services.access.auth import bootstrap_superadmin
from app.services.catalog.db import open_catalog
from app.services.jobs.handlers import JOB_HANDLERS
from app.services.jobs.runner import JobRunner
from app.services.ops.notify import job_listener
from app.services.storage import targets_from_settings

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.system.log_level)
        app.state.mongo = await open_catalog(settings)
        targets = targets_from_settings(settings)
        await targets.prepare()
        app.state.storage = targets.default  # content objects stay on the default target
        runner = JobRunner(settings, targets.default, JOB_HANDLERS, targets=targets)
        runner.finish_listeners.append(job_listener(settings))
        app.state.runner = runner
        created = await bootstrap_superadmin(settings)
        if created is not None:
            log.info("bootstrap superadmin created", username=created.username)
        runner.start()
        app.state.schedules = ScheduleService(runner)
        await app.state.schedules.start()
        log.info("backvault started", environment=settings.system.environment.value,
                 catalog_database=settings.catalog.database)
        try:
            yield
        finally:
            await app.state.schedules.stop()
            await runner.stop()
            await app.state.mongo.close()

    app = FastAPI(
        title="Backvault",
        version="0.1.0",
        description="Backups of PostgreSQL, MongoDB, IPFS and Gaia content: scheduled, "
        "streamed, encrypted, verified and restorable with stock tools.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    routers = [system.router, auth.router, jobs.router, backups.router, schedules.router,
               audit_api.router]
    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestLimits, settings=settings)
    # Added last, so outermost: it also records requests other middlewares refuse.
    app.add_middleware(AuditTrail)
    document_errors(app, routers)
    return app
