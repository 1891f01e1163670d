"""A content source's drill: re-hash a sample of the objects its newest backup holds, and
check that each IPFS object still decodes, block by block, to its CID."""

import random
import time
from contextlib import aclosing

from app.config import ContentType, Settings
from app.models.backup import Backup
from app.models.content import ContentItem, ContentObject
from app.models.drill import DrillCheck, RestoreDrill
from app.services.artifacts.read import opened
from app.services.artifacts.stages import Digest, counted, drain
from app.services.content import ipfs
from app.services.content.located import object_storage
from app.services.jobs.runner import Progress, error_text
from app.services.storage import StorageTargets


async def _check_object(settings: Settings, targets: StorageTargets, obj: ContentObject,
                        progress: Progress) -> str | None:
    """What is wrong with one stored object, if anything."""
    # Decoding needs the plaintext: unencrypted, or the identity is configured.
    decode = "age" not in obj.format_chain or settings.encryption.identity_file is not None
    digest = Digest()
    # Closed on a bad block too, so the storage stream does not stay open.
    async with aclosing(object_storage(targets, obj).get(obj.storage_key)) as stored:
        raw = counted(digest.tap(stored), progress.add_read)
        if decode and obj.type is ContentType.ipfs:
            car = opened(raw, obj.format_chain, settings)
            async for _ in ipfs.checked_blocks(car, {ipfs.cid_of_address(obj.id)}):
                pass  # each block is checked against its CID as it is read
        else:
            await drain(raw)
    if digest.size != obj.stored_bytes or digest.hexdigest != obj.sha256:
        return "stored bytes differ from the recorded size or SHA-256"
    return None


async def drill_content(settings: Settings, targets: StorageTargets, backup: Backup,
                        record: RestoreDrill, progress: Progress) -> None:
    """Re-read `drills.content_sample` objects of the backup (all when fewer)."""
    record.mode = "content"
    addresses: dict[str, None] = {}
    async for item in ContentItem.find({"backupId": backup.id}):
        addresses.update(dict.fromkeys(item.objects))
    sample = random.sample(list(addresses), min(len(addresses), settings.drills.content_sample))
    started = time.monotonic()
    progress.items_total = len(sample)
    for address in sample:
        obj = await ContentObject.get(address)
        try:
            problem = ("not in the catalog" if obj is None else
                       await _check_object(settings, targets, obj, progress))
        except Exception as exc:
            problem = error_text(exc)
        record.checks.append(DrillCheck(name=f"object {address}", passed=problem is None,
                                        detail=problem))
        if problem:
            record.failures.append(f"object {address}: {problem}")
        progress.items_done += 1
    record.checks.append(DrillCheck(name="sample", passed=True,
                                    detail=f"{len(sample)} of {len(addresses)} objects"))
    # A content restore is a read of its objects: the whole RTO is that read.
    elapsed = round(time.monotonic() - started, 3)
    record.phases.update(download_s=elapsed, restore_s=0.0, checks_s=0.0)
