"""Restore a backup: plan (dry run), guards, checksum, pre-restore safety backup, restore,
count check."""

from datetime import datetime
from typing import Any

import structlog
from beanie import PydanticObjectId
from pydantic import PrivateAttr

from app.config import Settings, SourceSettings
from app.errors import AppError, ConfirmationRequiredError, ConflictError
from app.models.backup import (
    Backup,
    BackupKind,
    BackupStatus,
    Verification,
    VerificationState,
)
from app.models.common import ApiSchema, utcnow
from app.models.job_params import RestoreParams, params_of
from app.models.requests import DatabaseBackupCreate, RestoreRequest
from app.services.access.auth import system_user_id
from app.services.artifacts.read import (
    HeaderState,
    IdentityMismatchError,
    check_header,
    plaintext,
    require_artifact,
)
from app.services.artifacts.stages import Digest, counted
from app.services.catalog.queries import get_backup, update_backup
from app.services.databases.backup import back_up, source_or_error
from app.services.databases.base import SourceError
from app.services.databases.kinds import in_other_format, kind_of
from app.services.jobs.runner import JobContext, Progress
from app.services.storage import StorageTargets, Targets, as_targets
from app.services.storage.copies import (
    ReadSource,
    copy_by_size,
    digest_of,
    good_copy,
    primary_stat,
)

log = structlog.get_logger(__name__)
SAFETY_RETENTION_DAYS = 7


class ProtectedDatabaseError(AppError):
    """The catalog, a system database or another source's database: never a target."""

    status_code = 409
    code = "protected_database"


class PlanItem(ApiSchema):
    name: str
    count: int | None
    bytes: int | None
    action: str  # create | replace | conflict
    existing_count: int | None = None


class PlanVerification(ApiSchema):
    state: VerificationState
    checked_at: datetime | None
    error: str | None = None


class RestorePlan(ApiSchema):
    backup_id: PydanticObjectId
    source: str
    kind: str
    database: str | None  # the database the backup holds
    target_database: str
    target_exists: bool
    drop_existing: bool
    items: list[PlanItem]
    conflicts: list[str]
    extra_in_target: list[str]
    backup_server_version: str | None
    target_server_version: str | None
    compatible: bool
    warnings: list[str]
    safety_backup: bool
    artifact_ok: bool
    # Set when the primary object is unusable and a copy on this target will be read.
    read_from_copy: str | None = None
    identity_ok: bool | None  # None: the backup is not encrypted
    verification: PlanVerification
    confirmation_required: bool
    _header: HeaderState = PrivateAttr(default=HeaderState.ok)
    _header_problem: str = PrivateAttr(default="")

    def refuse_conflicts(self) -> None:
        if self.conflicts:
            raise ConflictError(f"Target {self.target_database} already holds "
                                f"{', '.join(self.conflicts)}; set dropExisting to replace them",
                                {"conflicts": self.conflicts})

    def refuse_unsafe(self, request: RestoreRequest) -> None:
        """What a real restore must pass before anything is touched."""
        self.refuse_conflicts()
        if self.confirmation_required and request.confirm != self.target_database:
            raise ConfirmationRequiredError(_confirm_message(self, request.confirm),
                                            {"field": "confirm",
                                             "expected": self.target_database})
        if self._header in (HeaderState.mismatch, HeaderState.no_identity):
            raise IdentityMismatchError(f"{self._header_problem}; a configuration error, "
                                        "nothing was touched")
        if not self.artifact_ok:
            raise ConflictError("The backup cannot be restored as it is: "
                                + "; ".join(self.warnings), {"artifactOk": False})


def _confirm_message(plan: RestorePlan, given: str | None) -> str:
    target = plan.target_database
    if plan.drop_existing:
        what = "drops and replaces existing objects (dropExisting)"
    elif any(i.action == "replace" for i in plan.items):
        what = "replaces existing objects"
    else:
        what = "adds to a database that already holds data"
    wrong = f' ("confirm" was {given!r})' if given is not None else ""
    return (f"Restoring into {target} {what}; this cannot be undone. To proceed, send "
            f'"confirm": "{target}" in the request body (CLI: --confirm {target}){wrong}')


def protected_reason(settings: Settings, source: SourceSettings, target: str) -> str | None:
    """Why `target` can never be a restore target of `source`'s kind, if it cannot."""
    kind = kind_of(source.kind)
    fold = kind.fold
    name = fold(target)
    if kind.holds_catalog and name == fold(settings.catalog.database):
        return "it is Backvault's own catalog database"
    if name in kind.system_databases:
        return f"it is a {source.kind.value} system database"
    for other in settings.all_sources():
        if other.name != source.name and other.kind is source.kind \
                and fold(other.database_name()) == name:
            return f"it is the database of source {other.name!r}"
    return None


def refuse_protected(settings: Settings, source: SourceSettings, target: str) -> None:
    reason = protected_reason(settings, source, target)
    if reason is not None:
        raise ProtectedDatabaseError(
            f"Refused to restore into {target}: {reason}. Restore into a new database "
            "(targetDatabase) instead", {"targetDatabase": target, "reason": reason})


def _items(backup: Backup, counts: dict[str, int], empty_is_new: bool,
           drop_existing: bool) -> tuple[list[PlanItem], list[str]]:
    items, conflicts = [], []
    for entry in backup.contents:
        existing = counts.get(entry.name)
        if existing is None:
            action = "create"
        elif drop_existing:
            action = "replace"
        elif existing == 0 and empty_is_new:
            action = "create"
        else:
            action = "conflict"
            conflicts.append(entry.name)
        items.append(PlanItem(name=entry.name, count=entry.count, bytes=entry.bytes,
                              action=action, existing_count=existing))
    return items, conflicts


async def _artifact_checks(settings: Settings, targets: StorageTargets, backup: Backup,
                           warnings: list[str]) -> tuple[bool, HeaderState, str, str | None]:
    """Size, recorded verification and the age header: cheap, the object is not read whole.
    A copy stands in for a primary that is missing, unreachable or failed verification.
    Appends what is wrong to `warnings`; returns the copy's target when one is used."""
    key = require_artifact(backup)
    storage, info, unreachable = await primary_stat(targets, backup, key)
    ok = info is not None and info.size == backup.stored_bytes
    failed = backup.verification.state is VerificationState.failed
    copy = await copy_by_size(targets, backup, key, backup.stored_bytes) \
        if not ok or failed else None
    if copy is not None:
        storage, info, copy_target = copy
        why = unreachable or "missing, damaged or failed verification"
        warnings.append(f"the primary object is {why}; the restore will read the copy on "
                        f"target {copy_target}")
        ok, failed = True, False
    elif not ok:
        warnings.append(unreachable or
                        "the stored object is missing or its size differs from the catalog")
    if failed:
        ok = False
        warnings.append(f"the backup failed verification: {backup.verification.error}")
    header, problem = HeaderState.damaged, "the stored object is missing"
    if info is not None and storage is not None:
        header, problem = await check_header(storage, backup, settings)
        if header is HeaderState.damaged:
            ok = False
        if problem:
            warnings.append(problem)
    if ok:
        warnings.append("the stored object's SHA-256 is checked in full when the restore "
                        "starts, before the target is touched")
    return ok, header, problem, copy[2] if copy else None


async def plan_restore(settings: Settings, storage: Targets, backup: Backup,
                       request: RestoreRequest) -> RestorePlan:
    """What a restore would do, touching nothing; refuses protected targets always, and
    for a real restore (not dryRun) anything `RestorePlan.refuse_unsafe` refuses."""
    require_artifact(backup)
    if backup.kind is BackupKind.content:
        raise ConflictError("A content backup is restored into IPFS with POST "
                            f"/api/backups/{backup.id}/import, or exported with "
                            "export.car (IPFS) and export.tar (Gaia)")
    if in_other_format(backup):
        raise ConflictError(f"Backup {backup.id} is a {backup.format_chain[0]} base backup: "
                            f"restore it to a point in time with POST /api/pitr/"
                            f"{backup.source}/restore")
    source = source_or_error(settings, backup.source or "")
    target = request.target_database or backup.database or source.database_name()
    refuse_protected(settings, source, target)
    kind = kind_of(source.kind)
    exists, target_version, counts = await kind.inspect_target(settings, source, target)
    items, conflicts = _items(backup, counts, kind.empty_is_new, request.drop_existing)
    incompatible = kind.compatibility_warning(backup.server_version, target_version)
    warnings = [incompatible] if incompatible else []
    artifact_ok, header, problem, copy = await _artifact_checks(
        settings, as_targets(settings, storage), backup, warnings)
    plan = RestorePlan(
        backup_id=backup.id, source=source.name, kind=source.kind.value,  # type: ignore[arg-type]
        database=backup.database, target_database=target, target_exists=exists,
        drop_existing=request.drop_existing, items=items, conflicts=conflicts,
        extra_in_target=sorted(set(counts) - {e.name for e in backup.contents}),
        backup_server_version=backup.server_version, target_server_version=target_version,
        compatible=incompatible is None, warnings=warnings,
        safety_backup=request.safety_backup and exists and any(counts.values()),
        artifact_ok=artifact_ok, read_from_copy=copy,
        identity_ok=None if not backup.encrypted else header is HeaderState.ok,
        verification=PlanVerification(state=backup.verification.state,
                                      checked_at=backup.verification.checked_at,
                                      error=backup.verification.error),
        confirmation_required=request.drop_existing or bool(counts)
        or any(i.action == "replace" for i in items))
    plan._header, plan._header_problem = header, problem
    if not request.dry_run:
        plan.refuse_unsafe(request)
    return plan


async def _check_stored(targets: StorageTargets, backup: Backup,
                        progress: Progress) -> ReadSource:
    """The whole stored object against the catalog's SHA-256, before anything is touched;
    a mismatch proves damage, so it is recorded as a failed verification. A primary that
    is damaged or unreachable gives way to the first good copy."""
    progress.set_phase("checking", "reading the stored object to check its SHA-256")
    message = ("SHA-256 of the stored object differs from the catalog: the backup is "
               "damaged. Nothing was restored and no safety backup was taken")
    unreadable: AppError | None = None
    try:
        primary = targets.for_backup(backup)
        digest = await digest_of(primary, require_artifact(backup), progress.add_read)
        if digest.hexdigest == backup.sha256 and digest.size == backup.stored_bytes:
            return ReadSource(primary)
        await update_backup(backup, verification=Verification(
            state=VerificationState.failed, checked_at=utcnow(), sha256_ok=False,
            size_ok=digest.size == backup.stored_bytes, error=message))
        problem = "damaged (SHA-256 differs from the catalog)"
    except AppError as exc:
        unreadable, problem = exc, f"unreadable ({exc.message})"
    found = await good_copy(targets, backup, progress.add_read)
    if found is not None:
        found.primary_problem = problem
        log.warning("restoring from a copy", backup_id=str(backup.id), target=found.copy,
                    primary=problem)
        return found
    if unreadable is not None:
        raise unreadable
    raise ConflictError(message, {"backupId": str(backup.id)})


async def _safety_backup(settings: Settings, storage: Targets, source: SourceSettings,
                         backup: Backup, target: str,
                         requested_by: PydanticObjectId | None) -> str:
    """A backup of the target as it is, recorded as holding `target` (not the source's
    own database) and as the safety backup of this restore."""
    safety = await back_up(
        settings, storage, Progress(),
        DatabaseBackupCreate(source=source.name, retention_days=SAFETY_RETENTION_DAYS,
                             notes=f"Pre-restore backup of {target} before restoring "
                                   f"backup {backup.id}"),
        admin=requested_by or await system_user_id(), database=target, safety_for=backup.id)
    return str(safety.id)


async def restore(settings: Settings, storage: Targets, backup_id: PydanticObjectId,
                  request: RestoreRequest, progress: Progress,
                  requested_by: PydanticObjectId | None) -> dict[str, Any]:
    """Guards, checksum, safety backup, restore, count check; in that order."""
    backup = await get_backup(backup_id)
    storage = as_targets(settings, storage)
    plan = await plan_restore(settings, storage, backup,
                              request.model_copy(update={"dry_run": False}))
    source = source_or_error(settings, plan.source)
    read = await _check_stored(storage, backup, progress)
    safety_id = None
    if plan.safety_backup:
        progress.set_phase("safety backup", f"backing up {plan.target_database} first")
        safety_id = await _safety_backup(settings, storage, source, backup,
                                         plan.target_database, requested_by)
    note = (f"restored from copy on target {read.copy} (the primary was "
            f"{read.primary_problem})" if read.copy else None)
    progress.set_phase("restoring", f"into {plan.target_database}"
                       + (f"; {note}" if note else ""))
    digest = Digest()
    raw = counted(digest.tap(read.storage.get(require_artifact(backup))), progress.add_read)
    stream = plaintext(raw, backup, settings)
    counts = await kind_of(source.kind).restore(
        settings, source, stream, digest=digest, sha256=backup.sha256,
        database=plan.target_database, drop_existing=request.drop_existing)
    expected = {c.name: c.count for c in backup.contents if c.count is not None}
    mismatches = {name: {"expected": want, "restored": counts.get(name)}
                  for name, want in expected.items() if counts.get(name) != want}
    if mismatches:
        raise SourceError(f"Restored counts differ from the backup's: {mismatches}", mismatches)
    await update_backup(backup, status=BackupStatus.restored, restored_at=utcnow())
    log.info("backup restored", backup_id=str(backup_id), target=plan.target_database,
             safety_backup=safety_id)
    # Names can hold dots, which not every server accepts as keys: a list, not a map.
    return {"backupId": str(backup_id), "targetDatabase": plan.target_database,
            "counts": [{"name": n, "count": c} for n, c in sorted(counts.items())],
            "safetyBackupId": safety_id, "restoredFromCopy": read.copy, "note": note}


async def run_restore(ctx: JobContext) -> dict[str, Any]:
    """The `restore` job handler."""
    assert ctx.job.backup_id is not None
    request = params_of(ctx.job, RestoreParams)
    return await restore(ctx.settings, ctx.all_targets, ctx.job.backup_id, request, ctx.progress,
                         ctx.job.requested_by)
