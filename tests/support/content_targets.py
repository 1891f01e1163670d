"""Helpers of the content-target tests: a file added to the real Kubo, and settings whose
one content source backs up given CIDs through the local gateway onto named targets."""

import json
import os
from typing import Any

import httpx

from app.config import ContentSourceKind, ContentSourceSettings, Settings
from app.models.backup import Backup
from app.models.content import ContentBackupCreate, ContentItem
from app.services.access.auth import system_user_id
from app.services.content.backup import back_up_content
from app.services.jobs.runner import Progress
from app.services.storage import StorageTargets
from tests.support.settings import IPFS_API, IPFS_GATEWAY
from tests.support.storage_targets import with_targets

SOURCE = "ipfs-targets"


async def add_random(size: int = 300_000) -> str:
    """Add random bytes to Kubo (pinned, in several blocks); returns the root CID."""
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.post(f"{IPFS_API}/api/v0/add",
                                   params={"pin": "true", "chunker": "size-65536"},
                                   files=[("file", ("f", os.urandom(size)))])
    assert answer.status_code == 200, answer.text
    cid: str = json.loads(answer.text.splitlines()[-1])["Hash"]
    return cid


def content_on(settings: Settings, targets: list[dict[str, Any]], default: str,
               cids: list[str]) -> Settings:
    """The settings with these targets and one static IPFS source of cids."""
    named = with_targets(settings, targets, default=default)
    source = ContentSourceSettings(name=SOURCE, kind=ContentSourceKind.static, items=cids)
    return named.model_copy(update={"content": named.content.model_copy(update={
        "ipfs_gateways": [IPFS_GATEWAY], "retries": 0, "sources": [source]})})


async def back_up_cids(settings: Settings) -> tuple[Backup, list[ContentItem]]:
    """A content backup of the source onto the settings' default target."""
    targets = StorageTargets.from_settings(settings)
    await targets.prepare()
    backup = await back_up_content(settings, targets, Progress(),
                                   ContentBackupCreate(source=SOURCE),
                                   admin=await system_user_id())
    return backup, await ContentItem.find({"backupId": backup.id}).to_list()
