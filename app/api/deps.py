"""Dependencies shared by the routers: settings, the current user and role checks."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from app.config import Settings
from app.errors import AuthenticationError, PermissionDeniedError
from app.models.user import Role, User
from app.services.access.auth import decode_token, user_for_claims
from app.services.access.session import SAFE_METHODS, cookie_token, csrf_ok
from app.services.jobs.runner import JobRunner
from app.services.storage import StorageTargets

bearer = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


class CsrfError(PermissionDeniedError):
    code = "csrf_failed"


def request_token(request: Request, settings: Settings, bearer_token: str | None) -> str:
    """The bearer token, else the console's session cookie; a state-changing request
    authenticated by the cookie must echo the session's CSRF token (403 otherwise)."""
    if bearer_token:
        return bearer_token
    token = cookie_token(request.headers)
    if not token:
        raise AuthenticationError("Not authenticated")
    if request.method not in SAFE_METHODS and not csrf_ok(request.headers, token, settings):
        raise CsrfError("Missing or invalid CSRF token (send the X-CSRF-Token header)")
    return token


async def current_user(request: Request, settings: SettingsDep,
                       token: Annotated[str | None, Depends(bearer)]) -> User:
    token = request_token(request, settings, token)
    user = await user_for_claims(decode_token(token, settings))
    # The audit trail reads who made the request from here.
    request.state.user = user
    return user


def require_role(needed: Role) -> Callable[[User], Awaitable[User]]:
    async def check(user: Annotated[User, Depends(current_user)]) -> User:
        if not user.role.allows(needed):
            raise PermissionDeniedError(f"This action needs the {needed.value} role",
                                        {"required": needed.value, "role": user.role.value})
        return user

    return check


CurrentUser = Annotated[User, Depends(require_role(Role.viewer))]
AdminUser = Annotated[User, Depends(require_role(Role.admin))]
SuperUser = Annotated[User, Depends(require_role(Role.superadmin))]


def get_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.runner
    return runner


RunnerDep = Annotated[JobRunner, Depends(get_runner)]


def get_targets(request: Request) -> StorageTargets:
    """Every named storage target (the runner's, so jobs and requests agree)."""
    targets: StorageTargets = request.app.state.runner.targets
    return targets


TargetsDep = Annotated[StorageTargets, Depends(get_targets)]
