"""Console routes: sign-in and sign-out, the overview, assets, and the wiring into the app."""

import asyncio
from contextlib import suppress
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from app.config import Settings
from app.console import pages
from app.console.api import api_call, api_get
from app.console.web import HERE, SessionDep, SignInRequired, local_path, render, sign_in_redirect
from app.errors import AppError, PermissionDeniedError
from app.services.access.auth import decode_token, revoke_token
from app.services.access.session import clear_session, cookie_token, csrf_ok, set_session

router = APIRouter(include_in_schema=False)
# Installed by `npm ci` (Makefile) from package-lock.json; never fetched at run time. An
# installed package (an image) carries a copy in static/vendor/ instead.
HTMX_PLACES = (
    Path(__file__).resolve().parents[2] / "node_modules" / "htmx.org" / "dist" / "htmx.min.js",
    HERE / "static" / "vendor" / "htmx.min.js",
)
HTMX = next((p for p in HTMX_PLACES if p.is_file()), HTMX_PLACES[0])


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", None, next=local_path(next), error=None,
                  username="")


@router.post("/login")
async def login(request: Request, username: Annotated[str, Form(max_length=64)],
                password: Annotated[str, Form(max_length=256)],
                next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    """Through the token endpoint itself, so its login throttle and audit record apply.
    A form posted from another site is refused (it would sign the browser in as someone
    else)."""
    origin = request.headers.get("origin")
    if request.headers.get("sec-fetch-site") == "cross-site" or (
            origin and urlsplit(origin).netloc != request.headers.get("host")):
        raise PermissionDeniedError("Sign-in from another site is refused")
    answer = await api_call(request, "POST", "/api/auth/token",
                            data={"username": username, "password": password})
    if not answer.ok:
        response = render(request, "login.html", None, next=local_path(next),
                          error=answer.error, username=username)
        response.status_code = answer.status if answer.status in (401, 422, 429) else 400
        return response
    response = RedirectResponse(local_path(next), status_code=303)
    set_session(response, request, answer.data["access_token"], int(answer.data["expires_in"]))
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    token = cookie_token(request.headers)
    settings: Settings = request.app.state.settings
    if token:
        headers = request.headers.mutablecopy()
        headers["x-csrf-token"] = headers.get("x-csrf-token") or csrf
        if not csrf_ok(headers, token, settings):
            raise PermissionDeniedError("Missing or invalid CSRF token")
        # The cookie holds an API token: signing out ends it, not only its cookie.
        with suppress(AppError):
            await revoke_token(decode_token(token, settings))
    response = RedirectResponse("/login", status_code=303)
    clear_session(response, request)
    return response


@router.get("/")
async def overview(request: Request, session: SessionDep) -> Response:
    return render(request, "overview.html", session, nav="overview",
                  **await _overview_data(request, session.token))


@router.get("/partials/overview")
async def overview_partial(request: Request, session: SessionDep) -> Response:
    return render(request, "_overview.html", session,
                  **await _overview_data(request, session.token))


@router.get("/partials/active")
async def active_partial(request: Request, session: SessionDep) -> Response:
    # Polled every few seconds: the active jobs alone, not the whole status.
    active = await api_get(request, session.token, "/api/backups/jobs/active")
    return render(request, "_active.html", session, active=active)


async def _overview_data(request: Request, token: str) -> dict[str, object]:
    dashboard, active = await asyncio.gather(
        api_get(request, token, "/api/backups/dashboard"),
        api_get(request, token, "/api/backups/jobs/active"))
    return {"dashboard": dashboard, "active": active}


@router.get("/static/vendor/htmx.min.js")
async def htmx_asset(request: Request) -> FileResponse:
    """htmx as the package ships it; its own .gz when the browser takes gzip."""
    headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
    packed = HTMX.with_name(HTMX.name + ".gz")
    if "gzip" in request.headers.get("accept-encoding", "") and packed.is_file():
        return FileResponse(packed, media_type="text/javascript",
                            headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(HTMX, media_type="text/javascript", headers=headers)


def install_console(app: FastAPI) -> None:
    """Pages under /, assets under /static, and the redirect to sign-in."""
    app.include_router(router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(SignInRequired, sign_in_redirect)
