"""Which storage target holds a content object: the one it was written to, as for backups."""

from app.models.content import ContentObject
from app.services.storage import Storage, StorageTargets
from app.services.storage.targets import UnknownTargetError


def object_storage(targets: StorageTargets, obj: ContentObject) -> Storage:
    """The target obj was written to, by the rules of backups (StorageTargets.resolve);
    not configured: a 409 `unknown_storage_target`."""
    return targets.stores[targets.resolve(obj.storage_target, obj.storage_backend,
                                          f"Content object {obj.address}",
                                          {"address": obj.address})]


def readable(targets: StorageTargets, obj: ContentObject) -> bool:
    """Whether obj's target is configured (a backup then references it, not fetching it)."""
    try:
        object_storage(targets, obj)
    except UnknownTargetError:
        return False
    return True
