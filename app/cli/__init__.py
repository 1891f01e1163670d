"""The `backvault` command line: work runs in this process against the same catalog and
storage as the service."""

from app.cli import admin, backups  # noqa: F401  (their commands register on `app`)
from app.cli import catalog as _catalog  # noqa: F401  (catalog rebuild, doctor)
from app.cli import drills as _drills  # noqa: F401  (drill run/list)
from app.cli import pitr as _pitr  # noqa: F401  (wal-fetch, pitr window/basebackup)
from app.cli.common import app


def main() -> None:
    app()

