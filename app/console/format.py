"""Template filters: sizes, times, durations, as an operator reads them."""

from datetime import UTC, datetime
from typing import Any

from jinja2 import Undefined


def _number(value: Any) -> float | None:
    """A number, or None for missing values (None, Jinja's undefined) and non-numbers."""
    if value is None or isinstance(value, Undefined) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def human_bytes(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "—"
    size = number
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value or "").replace("Z", "+00:00"))
        except ValueError:  # missing (None, undefined) or not a time
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(value: Any) -> str:
    """UTC time to the minute, the way logs and alerts show it."""
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def duration(seconds: Any) -> str:
    number = _number(seconds)
    if number is None:
        return "—"
    total = int(round(number))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def duration_ms(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else duration(number / 1000)


def percent(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.1f}%"


FILTERS = {"bytes": human_bytes, "when": when, "duration": duration,
           "duration_ms": duration_ms, "percent": percent}
