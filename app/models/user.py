"""Users of the API and their roles."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from beanie import Document, PydanticObjectId
from pydantic import ConfigDict, Field, SecretStr
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
    email: str | None = None
    name: str | None = None
    role: Role = Role.viewer
    password_hash: str
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: datetime | None = None

    class Settings:
        name = "users"
        indexes = [IndexModel([("username", ASCENDING)], unique=True)]


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


class TokenOut(ApiSchema):
    access_token: str = Field(serialization_alias="access_token")
    token_type: str = Field(default="bearer", serialization_alias="token_type")
    expires_in: int = Field(serialization_alias="expires_in", description="seconds")
    role: Role
