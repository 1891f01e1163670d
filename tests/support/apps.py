"""A second app, started for real through its whole start-up on settings of its own."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from beanie import init_beanie
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from app.models import DOCUMENT_MODELS
from app.models.audit import AUDIT_MODELS

ROOT = {"username": "root", "password": "root-password-for-tests"}


@asynccontextmanager
async def running_app(session_app: FastAPI, session_settings: Settings, settings: Settings
                      ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app and a client; its catalog is left as it is (the caller drops it)."""
    other = create_app(settings)
    # Beanie's document classes are global: the session app's runner would claim the other
    # app's jobs (and run them on its own storage), its sweep would judge them. Both rest
    # meanwhile, once its own jobs are done.
    runner = session_app.state.runner
    await runner.pause()
    await session_app.state.schedules.stop()
    for _ in range(300):
        if not runner.active:
            break
        await asyncio.sleep(0.1)
    try:
        async with other.router.lifespan_context(other):
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://backvault.test") as client:
                yield other, client
    finally:
        try:  # bound to the session app's catalog again
            await init_beanie(database=session_app.state.mongo[session_settings.catalog.database],
                              document_models=[*DOCUMENT_MODELS, *AUDIT_MODELS],
                              skip_indexes=True)
        finally:
            runner.start()
            await session_app.state.schedules.start()


async def root_headers(client: httpx.AsyncClient) -> dict[str, str]:
    """The bootstrap superadmin's bearer headers."""
    token = await client.post("/api/auth/token", json=ROOT)
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}
