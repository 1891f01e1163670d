"""Users of the API and their roles."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from beanie import Document, PydanticObjectId
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator
from pymongo import ASCENDING, IndexModel

from app.models.common import ApiSchema, document_alias, utcnow


class Role(StrEnum):
    viewer = "viewer"
    admin = "admin"
    superadmin = "superadmin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: "Role") -> bool:
        return self.rank >= needed.rank


Username = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]


class User(Document):
    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True,
                              validate_assignment=True)

    username: Username
    # Unique (index made at start-up, after older users got the field): "Admin" = "admin".
    username_lower: str = ""
    email: str | None = None
    name: str | None = None
    role: Role = Role.viewer
    password_hash: str
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: datetime | None = None
    # Tokens issued before this are refused (revoke, password reset, disable).
    tokens_valid_after: datetime | None = None

    class Settings:
        name = "users"
        indexes = [IndexModel([("username", ASCENDING)], unique=True)]

    @model_validator(mode="before")
    @classmethod
    def _lower_name(cls, data: Any) -> Any:
        # Users stored by older versions have no usernameLower: compute it on read.
        if isinstance(data, dict) and not (data.get("usernameLower")
                                           or data.get("username_lower")):
            name = data.get("username")
            if isinstance(name, str):
                data = {**data, "usernameLower": name.lower()}
        return data


class LoginFailures(Document):
    """Failed logins of one username ("user:<lower>") or client address ("ip:<addr>")."""

    model_config = ConfigDict(alias_generator=document_alias, populate_by_name=True)

    key: str
    failures: int = 0
    last_failure_at: datetime | None = None
    blocked_until: datetime | None = None

    class Settings:
        name = "login_failures"
        indexes = [IndexModel([("key", ASCENDING)], unique=True)]


class UserCreate(ApiSchema):
    username: Username
    password: SecretStr = Field(min_length=12, max_length=256)
    email: str | None = Field(default=None, max_length=254,
                              pattern=r"^[^@\s]+@[^@\s]+$")
    name: str | None = Field(default=None, max_length=200)
    role: Role = Role.viewer


class UserOut(ApiSchema):
    id: PydanticObjectId
    username: str
    email: str | None
    name: str | None
    role: Role
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    tokens_valid_after: datetime | None = None


class UserUpdate(ApiSchema):
    """Fields to change; those left out stay. email and name may be null (cleared)."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    active: bool | None = None
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str | None = Field(default=None, max_length=200)

    @field_validator("role", "active", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Only runs for values sent: an explicit null is refused, leaving it out is not.
        if value is None:
            raise ValueError("cannot be null")
        return value


class PasswordReset(ApiSchema):
    password: SecretStr = Field(min_length=12, max_length=256)


class TokenOut(ApiSchema):
    access_token: str = Field(serialization_alias="access_token")
    token_type: str = Field(default="bearer", serialization_alias="token_type")
    expires_in: int = Field(serialization_alias="expires_in", description="seconds")
    role: Role
