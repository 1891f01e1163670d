"""Passwords (argon2), JWTs (HS256) and users."""

import asyncio
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import jwt
import structlog
from beanie import PydanticObjectId
from bson.errors import InvalidId
from pwdlib import PasswordHash
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError, PyMongoError

from app.config import Settings
from app.errors import AuthenticationError, ConflictError
from app.models.common import utcnow
from app.models.user import Role, User, UserCreate

log = structlog.get_logger(__name__)
ALGORITHM = "HS256"
# The account automatic work is recorded under; nobody logs into it or edits it.
SYSTEM_USERNAME = "system"


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


# argon2 takes ~0.1 s of CPU by design: off the event loop (the C code releases the GIL).
async def hashed_password(password: str) -> str:
    """hash_password() in a worker thread."""
    return await asyncio.to_thread(hash_password, password)


async def password_matches(password: str, password_hash: str | None) -> bool:
    """verify_password() in a worker thread; None checks against a dummy hash (as slow)."""
    def check() -> bool:
        return verify_password(password, password_hash or _dummy_hash())

    return await asyncio.to_thread(check)


@dataclass(frozen=True)
class TokenClaims:
    user_id: PydanticObjectId
    role: Role
    issued_at: float
    expires_at: float = 0.0
    token_id: str | None = None


def issue_token(user: User, settings: Settings) -> tuple[str, int]:
    """A signed access token for the user and its lifetime in seconds."""
    now = utcnow()
    lifetime = settings.auth.token_minutes * 60
    claims = {
        "sub": str(user.id),
        "role": user.role.value,
        "iss": settings.auth.jwt_issuer,
        "aud": settings.auth.jwt_audience,
        # Fractional seconds: a token issued just after a revocation stays valid.
        "iat": now.timestamp(),
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
        # A sub that is no ObjectId raises bson's InvalidId, which is no ValueError.
        return TokenClaims(user_id=PydanticObjectId(claims["sub"]), role=Role(claims["role"]),
                           issued_at=float(claims["iat"]), expires_at=float(claims["exp"]),
                           token_id=str(claims["jti"]) if claims.get("jti") else None)
    except (KeyError, ValueError, TypeError, InvalidId) as exc:
        raise AuthenticationError("Invalid token") from exc


async def find_by_username(username: str) -> User | None:
    """The user with this name, compared without regard to case."""
    user = await User.find_one({"usernameLower": username.lower()})
    if user is None:
        # A user stored by an older version and not yet migrated.
        user = await User.find_one({"username": username})
    return user


async def authenticate(username: str, password: str) -> User | None:
    """The active user with these credentials, or None; as slow for unknown users."""
    user = await find_by_username(username)
    if user is None or user.username_lower == SYSTEM_USERNAME:
        await password_matches(password, None)
        return None
    if not await password_matches(password, user.password_hash) or not user.active:
        return None
    await User.find_one({"_id": user.id}).update({"$set": {"lastLoginAt": utcnow()}})
    return user


def _revoked_tokens() -> Any:
    return User.get_pymongo_collection().database["revoked_tokens"]


async def revoke_token(claims: TokenClaims) -> None:
    """End one token before its expiry (a console sign-out); kept until it would expire."""
    if claims.token_id is None:
        return
    revoked = _revoked_tokens()
    expires = datetime.fromtimestamp(claims.expires_at, UTC)
    with suppress(DuplicateKeyError):
        await revoked.insert_one({"_id": claims.token_id, "expiresAt": expires})
    await revoked.delete_many({"expiresAt": {"$lt": utcnow()}})


async def user_for_claims(claims: TokenClaims) -> User:
    user = await User.get(claims.user_id)
    if user is None or not user.active:
        raise AuthenticationError("User no longer exists or is disabled")
    valid_after = user.tokens_valid_after
    if valid_after is not None and claims.issued_at < valid_after.timestamp():
        raise AuthenticationError("Token has been revoked")
    if claims.token_id and await _revoked_tokens().find_one({"_id": claims.token_id}):
        raise AuthenticationError("Token has been revoked")
    return user


async def create_user(data: UserCreate) -> User:
    if await find_by_username(data.username) is not None:
        raise ConflictError(f"User {data.username!r} already exists")
    user = User(username=data.username, username_lower=data.username.lower(), email=data.email,
                name=data.name, role=data.role,
                password_hash=await hashed_password(data.password.get_secret_value()))
    try:
        await user.insert()
    except DuplicateKeyError as exc:
        raise ConflictError(f"User {data.username!r} already exists") from exc
    log.info("user created", username=user.username, role=user.role.value)
    return user


async def list_users() -> list[User]:
    return await User.find_all().sort("username").to_list()


USERNAME_LOWER_INDEX = IndexModel([("usernameLower", ASCENDING)], unique=True,
                                  name="usernameLower_unique")


async def ensure_username_index() -> None:
    """Give users of older versions their lower-case name, then make it unique."""
    collection = User.get_pymongo_collection()
    async for doc in collection.find({"usernameLower": {"$exists": False}},
                                     {"username": 1}):
        await collection.update_one({"_id": doc["_id"]},
                                    {"$set": {"usernameLower": str(doc["username"]).lower()}})
    if USERNAME_LOWER_INDEX.document["name"] in await collection.index_information():
        return
    try:
        await collection.create_indexes([USERNAME_LOWER_INDEX])
    except PyMongoError as exc:
        # Names that differ only in case from an older version, or another replica racing:
        # log and go on; creating users still checks for the name first.
        log.warning("username index not created", error=str(exc))


async def bootstrap_superadmin(settings: Settings) -> User | None:
    """Migrate user names, then create the configured superadmin once, when none exists."""
    await ensure_username_index()
    username = settings.auth.bootstrap_username
    password = settings.auth.bootstrap_password
    if not username or password is None:
        return None
    if await User.find_one({"role": Role.superadmin.value}) is not None:
        return None
    try:
        return await create_user(UserCreate(username=username, password=password,
                                            email=settings.auth.bootstrap_email,
                                            name="Bootstrap superadmin", role=Role.superadmin))
    except ConflictError:
        # Another replica created it first.
        return None



async def system_user_id() -> PydanticObjectId:
    """The account automatic and command-line work is recorded under; it cannot log in."""
    user = await User.find_one({"username": SYSTEM_USERNAME})
    if user is None:
        try:
            user = User(username=SYSTEM_USERNAME, username_lower=SYSTEM_USERNAME,
                        name="Backvault (scheduled and CLI work)",
                        role=Role.admin, active=False,
                        password_hash=await hashed_password(uuid.uuid4().hex
                                                             + uuid.uuid4().hex))
            await user.insert()
        except DuplicateKeyError:
            user = await User.find_one({"username": SYSTEM_USERNAME})
    assert user is not None
    assert user.id is not None
    return user.id
