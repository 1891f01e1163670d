"""Which storage target holds a content object: the one it was written to, as for backups."""

from app.models.content import ContentObject
from app.services.storage import Storage, StorageTargets
from app.services.storage.targets import UnknownTargetError


def object_storage(targets: StorageTargets, obj: ContentObject) -> Storage:
    """The target obj was written to; a record naming only its backend maps to the target of
    that name, else the one target of that kind; a record naming neither (written before
    targets were recorded) to the default. Not configured: a 409 `unknown_storage_target`."""
    wanted = obj.storage_target or obj.storage_backend
    if wanted is None:
        return targets.default
    found = targets.for_copy(wanted)
    if found is not None:
        return found
    if targets.lenient:
        return targets.default
    if obj.storage_target is None:
        if targets.default.name == wanted:
            return targets.default
        kinds = [s for s in targets.stores.values() if s.name == wanted]
        if len(kinds) == 1:
            return kinds[0]
    raise UnknownTargetError(
        f"Content object {obj.address} was written to storage target {wanted!r}, which is "
        f"not configured (configured: {', '.join(targets.stores)}). Configure it in "
        "BACKUP_STORAGE__TARGETS", {"address": obj.address, "target": wanted})


def readable(targets: StorageTargets, obj: ContentObject) -> bool:
    """Whether obj's target is configured (a backup then references it, not fetching it)."""
    try:
        object_storage(targets, obj)
    except UnknownTargetError:
        return False
    return True
