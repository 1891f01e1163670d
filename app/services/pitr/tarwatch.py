"""Reading `backup_label` and `backup_manifest` out of pg_basebackup's tar as it streams
past (no temp file, no second read): they hold the backup's WAL start, stop and timeline."""

import json
import re
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from app.services.artifacts.stages import Chunks

BLOCK = 512
WANTED = ("backup_label", "backup_manifest")
START = re.compile(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)")
TIMELINE = re.compile(r"START TIMELINE: (\d+)")


@dataclass
class TarWatch:
    """Collects the wanted members (small files) of a tar stream."""

    files: dict[str, bytes] = field(default_factory=dict)
    _buffer: bytearray = field(default_factory=bytearray)
    _skip: int = 0  # bytes of the current member (and padding) still to pass
    _take: str | None = None
    _take_left: int = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._skip:
                n = min(self._skip, len(self._buffer))
                if self._take is not None and self._take_left:
                    part = bytes(self._buffer[:min(n, self._take_left)])
                    self.files[self._take] = self.files.get(self._take, b"") + part
                    self._take_left -= len(part)
                del self._buffer[:n]
                self._skip -= n
                if self._skip:
                    return
                self._take = None
            if len(self._buffer) < BLOCK:
                return
            header = bytes(self._buffer[:BLOCK])
            del self._buffer[:BLOCK]
            if header == b"\0" * BLOCK:
                continue
            name = header[:100].split(b"\0", 1)[0].decode(errors="replace")
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            self._skip = (size + BLOCK - 1) // BLOCK * BLOCK
            if name in WANTED:
                self._take, self._take_left = name, size
                self.files[name] = b""

    async def tap(self, chunks: Chunks) -> Chunks:
        async with aclosing(chunks) as source:
            async for chunk in source:
                self.feed(chunk)
                yield chunk

    def wal_range(self) -> dict[str, Any]:
        """timeline, startLsn, stopLsn, startWal as the backup recorded them."""
        label = self.files.get("backup_label", b"").decode(errors="replace")
        start, timeline = START.search(label), TIMELINE.search(label)
        if start is None or timeline is None:
            raise ValueError("the base backup holds no readable backup_label")
        result: dict[str, Any] = {"timeline": int(timeline.group(1)),
                                  "startLsn": start.group(1), "startWal": start.group(2)}
        manifest = self.files.get("backup_manifest")
        if manifest:
            ranges = json.loads(manifest).get("WAL-Ranges") or []
            if ranges:
                result["stopLsn"] = ranges[-1]["End-LSN"]
                result["timeline"] = int(ranges[-1]["Timeline"])
        if "stopLsn" not in result:
            raise ValueError("the base backup holds no backup_manifest with its WAL range")
        return result
