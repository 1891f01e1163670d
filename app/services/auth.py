"""Passwords (argon2), JWTs (HS256) and users."""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import jwt
import structlog
from beanie import PydanticObjectId
from pwdlib import PasswordHash
from pymongo.errors import DuplicateKeyError

from app.config import Settings
from app.errors import AuthenticationError, ConflictError
from app.models.common import utcnow
from app.models.user import Role, User, UserCreate

log = structlog.get_logger(__name__)
ALGORITHM = "HS256"


@lru_cache
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


@lru_cache
def _dummy_hash() -> str:
    return _hasher().hash(uuid.uuid4().hex)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    return _hasher().verify(password, password_hash)


@dataclass(frozen=True)
class TokenClaims:
    user_id: PydanticObjectId
    role: Role


def issue_token(user: User, settings: Settings) -> tuple[str, int]:
    """A signed access token for the user and its lifetime in seconds."""
    now = utcnow()
    lifetime = settings.auth.token_minutes * 60
    claims = {
        "sub": str(user.id),
        "role": user.role.value,
        "iss": settings.auth.jwt_issuer,
        "aud": settings.auth.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=lifetime),
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, settings.auth.jwt_secret.get_secret_value(), algorithm=ALGORITHM)
    return token, lifetime


def decode_token(token: str, settings: Settings) -> TokenClaims:
    """Check signature, algorithm, expiry, issuer and audience; 401 on anything wrong."""
    try:
        claims = jwt.decode(
            token,
            settings.auth.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=settings.auth.jwt_audience,
            issuer=settings.auth.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationError("Token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthenticationError("Invalid token") from exc
    try:
        return TokenClaims(user_id=PydanticObjectId(claims["sub"]), role=Role(claims["role"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise AuthenticationError("Invalid token") from exc


async def authenticate(username: str, password: str) -> User | None:
    """The active user with these credentials, or None; as slow for unknown users."""
    user = await User.find_one({"username": username})
    if user is None:
        verify_password(password, _dummy_hash())
        return None
    if not verify_password(password, user.password_hash) or not user.active:
        return None
    await User.find_one({"_id": user.id}).update({"$set": {"lastLoginAt": utcnow()}})
    return user


async def user_for_claims(claims: TokenClaims) -> User:
    user = await User.get(claims.user_id)
    if user is None or not user.active:
        raise AuthenticationError("User no longer exists or is disabled")
    return user


async def create_user(data: UserCreate) -> User:
    user = User(username=data.username, email=data.email, name=data.name, role=data.role,
                password_hash=hash_password(data.password.get_secret_value()))
    try:
        await user.insert()
    except DuplicateKeyError as exc:
        raise ConflictError(f"User {data.username!r} already exists") from exc
    log.info("user created", username=user.username, role=user.role.value)
    return user


async def list_users() -> list[User]:
    return await User.find_all().sort("username").to_list()


async def bootstrap_superadmin(settings: Settings) -> User | None:
    """Create the configured superadmin once, when no superadmin exists yet."""
    username = settings.auth.bootstrap_username
    password = settings.auth.bootstrap_password
    if not username or password is None:
        return None
    if await User.find_one({"role": Role.superadmin.value}) is not None:
        return None
    if await User.find_one({"username": username}) is not None:
        return None
    try:
        return await create_user(UserCreate(username=username, password=password,
                                            email=settings.auth.bootstrap_email,
                                            name="Bootstrap superadmin", role=Role.superadmin))
    except ConflictError:
        # Another replica created it first.
        return None


SYSTEM_USERNAME = "system"


async def system_user_id() -> PydanticObjectId:
    """The account automatic and command-line work is recorded under; it cannot log in."""
    user = await User.find_one({"username": SYSTEM_USERNAME})
    if user is None:
        try:
            user = User(username=SYSTEM_USERNAME, name="Backvault (scheduled and CLI work)",
                        role=Role.admin, active=False,
                        password_hash=hash_password(uuid.uuid4().hex + uuid.uuid4().hex))
            await user.insert()
        except DuplicateKeyError:
            user = await User.find_one({"username": SYSTEM_USERNAME})
    assert user is not None
    assert user.id is not None
    return user.id
