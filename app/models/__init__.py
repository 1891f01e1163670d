"""Beanie documents and the API schemas beside them."""

from beanie import Document

from app.models.backup import Backup
from app.models.content import ContentItem, ContentObject, GaiaUrlState
from app.models.drill import RestoreDrill
from app.models.job import BackupJob
from app.models.managed_source import ManagedSource
from app.models.schedule import Schedule, ScheduleFire
from app.models.user import LoginFailures, User
from app.models.verification import BackupVerification
from app.models.wal import WalSegment

DOCUMENT_MODELS: list[type[Document]] = [Backup, BackupJob, User, Schedule, ScheduleFire,
                                          ContentObject, ContentItem, GaiaUrlState,
                                          LoginFailures, BackupVerification, RestoreDrill,
                                          ManagedSource, WalSegment]
