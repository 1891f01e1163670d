"""A local directory: write to a partial name, fsync, rename; never a half file."""

import asyncio
import glob
import os
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path

from app.services.artifacts.stages import CHUNK, Chunks
from app.services.storage.base import ObjectInfo, ObjectNotFound, StorageError, check_key

PARTIAL = ".partial-"
FLUSH_EVERY = 64 * 1024 * 1024


class LocalStorage:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def prepare(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    def describe(self, key: str) -> str:
        return str(self._path(key))

    async def put(self, key: str, chunks: Chunks) -> int:
        final = self._path(key)
        partial = final.with_name(f"{final.name}{PARTIAL}{uuid.uuid4().hex}")
        size = 0
        try:
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            handle = await asyncio.to_thread(open, partial, "xb")
            # Written data is flushed to disk as it goes, one flush in flight at a time,
            # so the final fsync waits for the tail only, not for the whole object.
            flushing: asyncio.Future[None] | None = None
            flushed_at = 0
            try:
                async with aclosing(chunks) as source:
                    async for chunk in source:
                        await asyncio.to_thread(handle.write, chunk)
                        size += len(chunk)
                        if size - flushed_at >= FLUSH_EVERY and (
                                flushing is None or flushing.done()):
                            flushing = asyncio.ensure_future(
                                asyncio.to_thread(os.fdatasync, handle.fileno()))
                            flushed_at = size
                if flushing is not None:
                    await flushing
                await asyncio.to_thread(handle.flush)
                await asyncio.to_thread(os.fsync, handle.fileno())
            finally:
                if flushing is not None and not flushing.done():
                    await asyncio.gather(flushing, return_exceptions=True)
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, partial, final)
            await asyncio.to_thread(_fsync_dir, final.parent)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(partial.unlink, missing_ok=True))
            raise
        return size

    async def get(self, key: str) -> Chunks:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"No stored object {key}") from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = await asyncio.to_thread(self._path(key).stat)
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def list_objects(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        def walk() -> list[ObjectInfo]:
            if not self.root.exists():
                return []
            found = []
            for dirpath, _, files in os.walk(self.root):
                for name in files:
                    if PARTIAL in name:
                        continue
                    path = Path(dirpath) / name
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        st = path.stat()
                        found.append(ObjectInfo(key, st.st_size,
                                                datetime.fromtimestamp(st.st_mtime, UTC)))
            return sorted(found, key=lambda o: o.key)

        for info in await asyncio.to_thread(walk):
            yield info

    async def discard_incomplete(self, key: str) -> int:
        final = self._path(key)

        def remove() -> int:
            partials = list(final.parent.glob(f"{glob.escape(final.name)}{PARTIAL}*"))
            for path in partials:
                path.unlink(missing_ok=True)
            return len(partials)

        return await asyncio.to_thread(remove)

    async def discard_stale_partials(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds

        def remove() -> int:
            removed = 0
            for path in self.root.rglob(f"*{PARTIAL}*") if self.root.exists() else ():
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
            return removed

        return await asyncio.to_thread(remove)

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._path(key).unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot delete {key}: {exc.strerror}") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
