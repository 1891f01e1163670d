"""User management by superadmins (API) and operators (CLI): role, state, password, tokens."""

from typing import Any

import structlog
from beanie import PydanticObjectId

from app.errors import ConflictError, NotFoundError, PermissionDeniedError
from app.models.common import utcnow
from app.models.user import Role, User, UserUpdate
from app.services.access.auth import SYSTEM_USERNAME, find_by_username, hashed_password
from app.services.catalog.locks import catalog_lock

log = structlog.get_logger(__name__)
SUPERADMINS_LOCK = "superadmins"


async def get_user(user_id: PydanticObjectId) -> User:
    user = await User.get(user_id)
    if user is None:
        raise NotFoundError(f"User {user_id} not found", {"id": str(user_id)})
    return user


async def get_user_by_name(username: str) -> User:
    user = await find_by_username(username)
    if user is None:
        raise NotFoundError(f"User {username!r} not found", {"username": username})
    return user


def _editable(user: User) -> None:
    if user.username_lower == SYSTEM_USERNAME:
        raise PermissionDeniedError("The system account cannot be changed",
                                    {"username": user.username})


def _takes_superadmin_access(target: User, update: dict[str, Any]) -> bool:
    return target.role is Role.superadmin and target.active and (
        update.get("role", Role.superadmin.value) != Role.superadmin.value
        or update.get("active") is False)


async def _keep_a_superadmin(target: User, actor: User | None, what: str) -> None:
    """Refuse when target's superadmin access would go and it is the caller's or the last.

    Called under SUPERADMINS_LOCK: two superadmins demoting each other at once must not
    both see the other as the one left."""
    if target.role is not Role.superadmin or not target.active:
        return
    if actor is not None and actor.id == target.id:
        raise ConflictError(f"You cannot {what} yourself: ask another superadmin",
                            {"id": str(target.id)})
    others = await User.find({"role": Role.superadmin.value, "active": True,
                              "_id": {"$ne": target.id}}).count()
    if others == 0:
        raise ConflictError(f"{target.username!r} is the last active superadmin; "
                            f"cannot {what} it", {"id": str(target.id)})


async def _set(user: User, changes: dict[str, Any]) -> User:
    await User.find_one({"_id": user.id}).update({"$set": changes})
    return await get_user(user.id)  # type: ignore[arg-type]


def _changes(user: User, changes: UserUpdate) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if changes.role is not None and changes.role is not user.role:
        update["role"] = changes.role.value
    if changes.active is not None and changes.active != user.active:
        update["active"] = changes.active
        if not changes.active:
            update["tokensValidAfter"] = utcnow()
    for field in ("email", "name"):
        if field in changes.model_fields_set:
            update[field] = getattr(changes, field)
    return update


async def update_user(user: User, changes: UserUpdate, actor: User | None) -> User:
    """Change role, active state, email or name; disabling also revokes the user's tokens."""
    _editable(user)
    update = _changes(user, changes)
    if not update:
        return user
    if _takes_superadmin_access(user, update):
        async with catalog_lock(SUPERADMINS_LOCK):
            user = await get_user(user.id)  # type: ignore[arg-type]
            update = _changes(user, changes)
            if not update:  # another request made the same change meanwhile
                return user
            what = "disable" if update.get("active") is False else "demote"
            await _keep_a_superadmin(user, actor, what)
            log.info("user changed", username=user.username, fields=sorted(update))
            return await _set(user, update)
    log.info("user changed", username=user.username, fields=sorted(update))
    return await _set(user, update)


async def reset_password(user: User, password: str) -> User:
    """Set a new password and revoke every token issued before."""
    _editable(user)
    log.info("user password reset", username=user.username)
    return await _set(user, {"passwordHash": await hashed_password(password),
                             "tokensValidAfter": utcnow()})


async def revoke_tokens(user: User) -> User:
    """Every token issued to the user so far stops working."""
    _editable(user)
    log.info("user tokens revoked", username=user.username)
    return await _set(user, {"tokensValidAfter": utcnow()})


async def delete_user(user: User, actor: User | None) -> None:
    _editable(user)
    async with catalog_lock(SUPERADMINS_LOCK):
        user = await get_user(user.id)  # type: ignore[arg-type]
        await _keep_a_superadmin(user, actor, "delete")
        await user.delete()
    log.info("user deleted", username=user.username)
