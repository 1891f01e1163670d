"""A PITR restore checks the restore folder has room for the data directory and its WAL
before it starts (a weekly drill restores the whole cluster there)."""

import shutil
from pathlib import Path

import pytest

from app.config import PitrSettings
from app.errors import ConflictError
from app.models.backup import Backup
from app.models.wal import WalSegment
from app.services.pitr.restore import check_space
from tests.support.settings import make_settings


def test_a_restore_that_cannot_fit_is_refused_before_it_starts(tmp_path: Path) -> None:
    settings = make_settings(pitr=PitrSettings(restore_dir=tmp_path / "restores"))
    free = shutil.disk_usage(tmp_path).free
    wal = [WalSegment.model_construct(size=16 << 20) for _ in range(4)]
    check_space(settings, Backup.model_construct(plaintext_bytes=free // 4), wal)
    with pytest.raises(ConflictError, match="this restore needs about") as refused:
        check_space(settings, Backup.model_construct(plaintext_bytes=free), wal)
    assert refused.value.details["neededBytes"] > free
