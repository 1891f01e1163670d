"""WAL file names and LSNs: `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, log, segment)."""

import re

SEGMENT = re.compile(r"^[0-9A-F]{24}$")
HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


def is_segment(name: str) -> bool:
    return bool(SEGMENT.match(name))


def is_history(name: str) -> bool:
    return bool(HISTORY.match(name))


def timeline_of(name: str) -> int:
    return int(name[:8], 16)


def segment_number(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    per_log = 0x100000000 // segment_size
    return int(name[8:16], 16) * per_log + int(name[16:24], 16)


def segment_name(timeline: int, number: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per_log = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def segment_range(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[int, int]:
    """First and one-past-last byte position (LSN) of a segment."""
    start = segment_number(name, segment_size) * segment_size
    return start, start + segment_size


def parse_lsn(text: str) -> int:
    high, _, low = text.strip().partition("/")
    if not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
