"""What the storage listing answers."""

from datetime import datetime

from app.models.common import ApiSchema


class StoredFile(ApiSchema):
    key: str
    size: int
    modified: datetime | None
    target: str | None = None  # the storage target listed
