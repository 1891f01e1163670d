"""Tokens and users."""

from typing import Annotated, Any

from beanie import PydanticObjectId
from fastapi import APIRouter, Body, Depends, Request, Response, status
from pydantic import Field, SecretStr, ValidationError

from app.api.deps import CurrentUser, SettingsDep, SuperUser
from app.api.openapi import ErrorBody
from app.errors import AuthenticationError, InvalidInputError, validation_details
from app.models.common import ApiSchema
from app.models.user import PasswordReset, TokenOut, User, UserCreate, UserOut, UserUpdate
from app.services.access import auth as auth_service
from app.services.access import login_throttle, users

router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginRequest(ApiSchema):
    username: str = Field(min_length=1, max_length=64)
    password: SecretStr = Field(min_length=1, max_length=256)


TOKEN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["username", "password"],
                "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                               "grant_type": {"type": "string", "enum": ["password"]}}}},
            "application/json": {"schema": LoginRequest.model_json_schema()},
        },
    }
}


@router.post("/token", response_model=TokenOut, openapi_extra=TOKEN_BODY, responses={
    401: {"model": ErrorBody, "description": "Incorrect username or password"},
    429: {"model": ErrorBody, "description": "Too many failed logins; see Retry-After"}})
async def issue_token(request: Request, settings: SettingsDep) -> TokenOut:
    """Exchange a username and password (form or JSON) for a bearer token; repeated failures
    are answered 429 with Retry-After for a while."""
    login = await _read_login(request)
    # The audit trail reads who tried to log in from here.
    request.state.login_username = login.username
    address = request.client.host if request.client else "unknown"
    await login_throttle.check(login.username, address)
    user = await auth_service.authenticate(login.username, login.password.get_secret_value())
    if user is None:
        await login_throttle.record_failure(login.username, address, settings.login)
        raise AuthenticationError("Incorrect username or password")
    await login_throttle.record_success(login.username)
    token, lifetime = auth_service.issue_token(user, settings)
    return TokenOut(access_token=token, expires_in=lifetime, role=user.role)


async def _read_login(request: Request) -> LoginRequest:
    content_type = request.headers.get("content-type", "")
    try:
        raw: Any = (await request.json() if content_type.startswith("application/json")
                    else dict(await request.form()))
    except ValueError as exc:
        raise InvalidInputError("Request body is not valid JSON") from exc
    try:
        return LoginRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError("username and password are required",
                                validation_details(list(exc.errors()))) from exc


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> UserOut:
    """The user the token belongs to."""
    return UserOut.model_validate(user)


@router.get("/users", response_model=list[UserOut])
async def list_users(_: SuperUser) -> list[UserOut]:
    """All users (superadmin)."""
    return [UserOut.model_validate(u) for u in await auth_service.list_users()]


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def create_user(body: Annotated[UserCreate, Body()], _: SuperUser) -> UserOut:
    """Create a user with a role (superadmin)."""
    return UserOut.model_validate(await auth_service.create_user(body))


async def target_user(user_id: PydanticObjectId) -> User:
    """The user named in the path; 404 if there is none."""
    return await users.get_user(user_id)


TargetUser = Annotated[User, Depends(target_user)]


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(_: SuperUser, target: TargetUser) -> UserOut:
    """One user (superadmin)."""
    return UserOut.model_validate(target)


@router.patch("/users/{user_id}", response_model=UserOut)
async def update_user(actor: SuperUser, target: TargetUser, body: UserUpdate) -> UserOut:
    """Change a user's role, active state, email or name (superadmin); disabling revokes the
    user's tokens. The last active superadmin, and your own superadmin access, stay."""
    return UserOut.model_validate(await users.update_user(target, body, actor))


@router.post("/users/{user_id}/password", response_model=UserOut)
async def reset_password(_: SuperUser, target: TargetUser, body: PasswordReset) -> UserOut:
    """Set a new password for a user and revoke its tokens (superadmin)."""
    return UserOut.model_validate(
        await users.reset_password(target, body.password.get_secret_value()))


@router.post("/users/{user_id}/revoke", response_model=UserOut)
async def revoke_tokens(_: SuperUser, target: TargetUser) -> UserOut:
    """Revoke every token issued to a user so far (superadmin)."""
    return UserOut.model_validate(await users.revoke_tokens(target))


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
async def delete_user(actor: SuperUser, target: TargetUser) -> Response:
    """Delete a user (superadmin); not the last active superadmin, not yourself."""
    await users.delete_user(target, actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
