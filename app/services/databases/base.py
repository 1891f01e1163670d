"""What every source reports about a dump."""

from dataclasses import dataclass, field

from app.errors import AppError
from app.models.backup import ContentEntry


class SourceError(AppError):
    status_code = 502
    code = "source_error"


@dataclass
class DumpInfo:
    """Filled in while a dump runs; complete when its stream has ended."""

    server_version: str | None = None
    tool_version: str | None = None
    contents: list[ContentEntry] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
