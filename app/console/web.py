"""What every console page shares: the signed-in session, templates, the sign-in redirect."""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.config import Settings
from app.console.charts import per_day_chart, storage_chart
from app.console.format import FILTERS
from app.errors import AuthenticationError
from app.models.user import Role, User
from app.services.access.auth import decode_token, user_for_claims
from app.services.access.session import clear_session, cookie_token, csrf_token

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(FILTERS)
templates.env.globals.update(per_day_chart=per_day_chart, storage_chart=storage_chart)


class SignInRequired(Exception):
    """No session, or it expired or was revoked: back to the sign-in page."""


@dataclass(frozen=True)
class Session:
    token: str
    user: User
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.user.role.allows(Role.admin)

    @property
    def is_super(self) -> bool:
        return self.user.role.allows(Role.superadmin)


async def console_session(request: Request) -> Session:
    settings: Settings = request.app.state.settings
    token = cookie_token(request.headers)
    if not token:
        raise SignInRequired()
    try:
        user = await user_for_claims(decode_token(token, settings))
    except AuthenticationError as exc:
        raise SignInRequired() from exc
    return Session(token=token, user=user, csrf=csrf_token(token, settings))


SessionDep = Annotated[Session, Depends(console_session)]


def local_path(target: str | None) -> str:
    """Only a path on this site is a place to return to after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def sign_in_redirect(request: Request, _: Exception) -> Response:
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.headers.get("hx-request"):
        # A partial refresh: the whole page goes to sign-in, not the fragment's box.
        current = urlsplit(request.headers.get("hx-current-url", "/"))
        back = local_path(current.path + (f"?{current.query}" if current.query else ""))
        response: Response = Response(status_code=204)
        response.headers["HX-Redirect"] = f"/login?next={quote(back)}"
    else:
        response = RedirectResponse(f"/login?next={quote(back)}", status_code=303)
    clear_session(response, request)
    return response


def render(request: Request, name: str, session: Session | None, **context: Any) -> Response:
    return templates.TemplateResponse(request, name, {"session": session, **context})
