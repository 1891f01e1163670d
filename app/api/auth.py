"""Tokens and users."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, status
from pydantic import Field, SecretStr, ValidationError

from app.api.deps import CurrentUser, SettingsDep, SuperUser
from app.errors import AuthenticationError, InvalidInputError, validation_details
from app.models.common import ApiSchema
from app.models.user import TokenOut, UserCreate, UserOut
from app.services import auth as auth_service

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


@router.post("/token", response_model=TokenOut, openapi_extra=TOKEN_BODY)
async def issue_token(request: Request, settings: SettingsDep) -> TokenOut:
    """Exchange a username and password (form or JSON) for a bearer token."""
    content_type = request.headers.get("content-type", "")
    try:
        raw: Any = (await request.json() if content_type.startswith("application/json")
                    else dict(await request.form()))
    except ValueError as exc:
        raise InvalidInputError("Request body is not valid JSON") from exc
    try:
        login = LoginRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError("username and password are required",
                                validation_details(list(exc.errors()))) from exc
    user = await auth_service.authenticate(login.username, login.password.get_secret_value())
    if user is None:
        raise AuthenticationError("Incorrect username or password")
    token, lifetime = auth_service.issue_token(user, settings)
    return TokenOut(access_token=token, expires_in=lifetime, role=user.role)


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
