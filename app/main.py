"""create_app(): the FastAPI application and its lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from app.api import audit as audit_api
from app.api import auth, backups, jobs, managed_sources, schedules, system
from app.api import catalog as catalog_api
from app.api import drills as drills_api
from app.api import pitr as pitr_api
from app.api import sources as sources_api
from app.api import verifications as verifications_api
from app.api.audit_trail import AuditTrail
from app.api.limits import RequestLimits
from app.api.openapi import document_errors
from app.config import Settings, get_settings
from app.console.routes import install_console
from app.errors import install_error_handlers
from app.runtime import open_runtime
from app.scheduler.service import ScheduleService
from app.services.pitr.archiver import start_archivers

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, bootstrap_admin=True) as runtime:
            app.state.mongo = runtime.mongo
            app.state.runner = runtime.runner
            # Before anything starts: a PITR source that is not a PostgreSQL one stops here.
            app.state.pitr = start_archivers(settings, runtime.runner)
            runtime.runner.start()
            app.state.schedules = ScheduleService(runtime.runner)
            await app.state.schedules.start()
            log.info("backvault started", environment=settings.system.environment.value,
                     catalog_database=settings.catalog.database)
            try:
                yield
            finally:
                await app.state.schedules.stop()
                await app.state.pitr.stop()

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
               audit_api.router, catalog_api.router, verifications_api.router,
               drills_api.router, managed_sources.router, pitr_api.router, sources_api.router]
    for router in routers:
        app.include_router(router)
    install_console(app)
    app.add_middleware(RequestLimits, settings=settings)
    # Added last, so outermost: it also records requests other middlewares refuse.
    app.add_middleware(AuditTrail)
    document_errors(app, routers)
    return app
