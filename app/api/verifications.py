"""A backup's verification history."""

from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query

from app.api.deps import CurrentUser
from app.models.verification import BackupVerificationOut
from app.services.catalog import queries as catalog
from app.services.recoverability.records import verifications_of

router = APIRouter(prefix="/api/backups", tags=["backups"])


@router.get("/{backup_id}/verifications", response_model=list[BackupVerificationOut])
async def backup_verifications(backup_id: PydanticObjectId, _: CurrentUser,
                               limit: Annotated[int, Query(ge=1, le=1000)] = 100
                               ) -> list[BackupVerificationOut]:
    """Each verification of one backup (after backup, rolling, manual), newest first."""
    await catalog.get_backup(backup_id)
    return [BackupVerificationOut.model_validate(r)
            for r in await verifications_of(backup_id, limit)]
