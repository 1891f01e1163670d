"""A directory on a host reached over SSH (SFTP through asyncssh): a write goes to a partial
name, is fsynced where the server offers fsync@openssh.com and renamed when complete, so
nothing looks whole before it is. The server's host key is pinned, never learned."""

import asyncio
import posixpath
import stat as stat_mode
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress
from datetime import UTC, datetime

import asyncssh

from app.config import StorageTargetSettings
from app.services.artifacts.stages import CHUNK, Chunks
from app.services.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_key,
    check_prefix,
)
from app.services.storage.sftp_session import CONNECT_TIMEOUT, TRANSPORT_ERRORS, SftpSession

PARTIAL = ".partial-"
# Bytes gathered into one write while the previous one is sent, as MAX_REQUESTS SFTP
# requests in flight (2 MiB: enough for a WAN round trip, and a put holds ~13 MiB whatever
# the object's size; measured with the storage contract's bounded-memory check).
WRITE_BATCH = 4 * 1024 * 1024
WRITES_IN_FLIGHT = 1
MAX_REQUESTS = 8


class SftpStorage:
    name = "sftp"

    def __init__(self, host: str, user: str, *, known_host: str, directory: str,
                 port: int = 22, password: str | None = None, private_key: str | None = None,
                 passphrase: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.root = directory.rstrip("/") or ("/" if directory.startswith("/") else ".")
        self.session = SftpSession(host, port, user, known_host=known_host, password=password,
                                   private_key=private_key, passphrase=passphrase,
                                   connect_timeout=connect_timeout)
        self.fsyncs = 0  # writes the server fsynced (fsync@openssh.com)

    @classmethod
    def from_target(cls, target: StorageTargetSettings) -> "SftpStorage":
        assert target.sftp_host
        assert target.sftp_user
        assert target.sftp_known_host
        return cls(
            target.sftp_host, target.sftp_user, port=target.sftp_port,
            known_host=target.sftp_known_host, directory=target.sftp_dir or ".",
            password=target.sftp_password.get_secret_value() if target.sftp_password else None,
            private_key=(target.sftp_private_key.get_secret_value()
                         if target.sftp_private_key else None),
            passphrase=(target.sftp_private_key_passphrase.get_secret_value()
                        if target.sftp_private_key_passphrase else None))

    @property
    def connects(self) -> int:
        return self.session.connects

    async def close(self) -> None:
        await self.session.close()

    # ---- paths --------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, check_key(key))

    def describe(self, key: str) -> str:
        return self._url(self._path(key))

    def _url(self, path: str) -> str:
        where = path if path.startswith("/") else f"/~/{path.removeprefix('./')}"
        return f"sftp://{self.user}@{self.host}:{self.port}{where}"

    async def prepare(self) -> None:
        with self.session.mapped(f"Cannot prepare {self.location}"):
            sftp = await self.session.client()
            await sftp.makedirs(self.root, exist_ok=True)

    # ---- writing ------------------------------------------------------------------------

    async def put(self, key: str, chunks: Chunks) -> int:
        final = self._path(key)
        partial = f"{final}{PARTIAL}{uuid.uuid4().hex}"
        what = f"Upload to {self.describe(key)} failed"
        with self.session.mapped(what):
            sftp = await self.session.client()
            await sftp.makedirs(posixpath.dirname(final), exist_ok=True)
            handle = await sftp.open(partial, "xb", max_requests=MAX_REQUESTS)
        try:
            try:
                size = await self._write_all(handle, chunks, what)
                with self.session.mapped(what):
                    self.fsyncs += await _fsync(handle)
            finally:
                with suppress(*TRANSPORT_ERRORS):
                    await asyncio.shield(handle.close())
            with self.session.mapped(what):
                await self._rename(sftp, partial, final)
                await self._fsync_directory(sftp, posixpath.dirname(final))
        except BaseException:
            await asyncio.shield(self._remove_quietly(partial))
            raise
        return size

    async def _write_all(self, handle: asyncssh.SFTPClientFile, chunks: Chunks,
                         what: str) -> int:
        """Writes the stream at increasing offsets, a few batches in flight; the source's
        own errors pass as they are, the server's become StorageErrors."""
        pending: list[bytes] = []
        pending_bytes = offset = 0
        in_flight: set[asyncio.Task[int]] = set()

        async def send(data: bytes, at: int) -> int:
            with self.session.mapped(what):  # the server's errors only: the source is not read here
                return await handle.write(data, at)

        try:
            async with aclosing(chunks) as source:
                async for chunk in source:
                    pending.append(chunk)
                    pending_bytes += len(chunk)
                    if pending_bytes < WRITE_BATCH:
                        continue
                    while len(in_flight) >= WRITES_IN_FLIGHT:
                        done, in_flight = await asyncio.wait(
                            in_flight, return_when=asyncio.FIRST_COMPLETED)
                        for task in done:
                            task.result()
                    data = b"".join(pending)
                    pending, pending_bytes = [], 0
                    in_flight.add(asyncio.create_task(send(data, offset)))
                    offset += len(data)
            if pending:
                data = b"".join(pending)
                in_flight.add(asyncio.create_task(send(data, offset)))
                offset += len(data)
            for task in list(in_flight):
                await task
            return offset
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _rename(self, sftp: asyncssh.SFTPClient, partial: str, final: str) -> None:
        try:
            await sftp.posix_rename(partial, final)  # atomic, replaces an existing object
        except asyncssh.SFTPOpUnsupported:
            # A server without the OpenSSH extension: plain SFTP rename refuses to replace.
            with suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(final)
            await sftp.rename(partial, final)

    async def _fsync_directory(self, sftp: asyncssh.SFTPClient, directory: str) -> None:
        """Makes the rename durable where the server lets a directory be opened (OpenSSH on
        Linux does); elsewhere the file's own fsync is what there is."""
        try:
            handle = await sftp.open(directory, "rb")
        except asyncssh.SFTPError:
            return
        try:
            await _fsync(handle)
        except asyncssh.SFTPError:
            pass
        finally:
            await handle.close()

    async def _remove_quietly(self, path: str) -> None:
        """Cleanup after a failed put; if the server is gone, the stale-partial sweep
        removes it later."""
        with suppress(*TRANSPORT_ERRORS):
            sftp = await asyncio.wait_for(self.session.client(), self.session.connect_timeout)
            with suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(path)

    # ---- reading ------------------------------------------------------------------------

    def get(self, key: str) -> Chunks:
        return self.get_range(key, 0)

    async def get_range(self, key: str, offset: int, length: int | None = None) -> Chunks:
        """`length` bytes from `offset` (None: to the end), read one chunk ahead."""
        if offset < 0 or (length is not None and length < 0):
            raise StorageError(f"Invalid range {offset}+{length} of {key}")
        what = f"Cannot read {self.describe(key)}"
        with self.session.mapped(what):
            sftp = await self.session.client()
            try:
                handle = await sftp.open(self._path(key), "rb")
            except asyncssh.SFTPNoSuchFile as exc:
                raise ObjectNotFound(f"No stored object {key}") from exc
        try:
            with self.session.mapped(what):
                # Reads stop at the end: one past it would leave the client's parallel
                # requests failing with EOF after an early close.
                size = (await handle.stat()).size or 0
            end = size if length is None else min(size, offset + length)
            async for chunk in self._read_ahead(handle, offset, end, what):
                yield chunk
        finally:
            with suppress(*TRANSPORT_ERRORS):
                await asyncio.shield(handle.close())

    async def _read_ahead(self, handle: asyncssh.SFTPClientFile, offset: int, end: int,
                          what: str) -> Chunks:
        async def read(at: int) -> bytes:
            with self.session.mapped(what):
                data: bytes = await handle.read(min(CHUNK, end - at), at)
                return data

        ahead = asyncio.create_task(read(offset)) if offset < end else None
        try:
            while ahead is not None:
                chunk = await ahead
                if not chunk:  # shorter than it was at the start: verify tells
                    break
                offset += len(chunk)
                ahead = asyncio.create_task(read(offset)) if offset < end else None
                yield chunk
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    @property
    def location(self) -> str:
        """Where the objects land, as a URL."""
        return self._url(self.root)

    async def free_space(self) -> int | None:
        """Free bytes where the objects land, or None when the server does not say
        (OpenSSH answers `statvfs@openssh.com`)."""
        with self.session.mapped(f"Cannot read the free space of {self.location}"):
            sftp = await self.session.client()
            try:
                stats = await sftp.statvfs(self.root)
            except asyncssh.SFTPOpUnsupported:
                return None
        return int(stats.bavail * (stats.frsize or stats.bsize))  # some servers send frsize 0

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        with self.session.mapped(f"Cannot stat {self.describe(key)}"):
            sftp = await self.session.client()
            try:
                attrs = await sftp.stat(path)
            except asyncssh.SFTPNoSuchFile:
                return None
        if stat_mode.S_ISDIR(attrs.permissions or 0):
            return None  # a folder of keys, not an object (as on S3)
        return ObjectInfo(key, attrs.size or 0, _modified(attrs))

    async def delete(self, key: str) -> None:
        with self.session.mapped(f"Cannot delete {self.describe(key)}"):
            sftp = await self.session.client()
            with suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(self._path(key))

    # ---- listing and partials -----------------------------------------------------------

    async def _walk(self, prefix: str) -> AsyncGenerator[tuple[str, asyncssh.SFTPAttrs], None]:
        """(key, attributes) of every file whose key starts with prefix, in key order."""
        # "/etc/" must be refused, or the join below would drop the root.
        check_prefix(prefix)
        sftp = await self.session.client()
        async for item in self._walk_folder(sftp, posixpath.dirname(prefix), prefix):
            yield item

    async def _walk_folder(self, sftp: asyncssh.SFTPClient, folder: str, prefix: str
                           ) -> AsyncGenerator[tuple[str, asyncssh.SFTPAttrs], None]:
        # A folder sorts as its name plus "/": then walking each one where it sorts among
        # its siblings gives every key in order, as S3 lists them.
        try:
            names = [n async for n in sftp.scandir(posixpath.join(self.root, folder))]
        except asyncssh.SFTPNoSuchFile:
            return
        entries = sorted(
            (_name(n) + "/" if stat_mode.S_ISDIR(n.attrs.permissions or 0) else _name(n),
             n.attrs) for n in names if _name(n) not in (".", ".."))
        for name, attrs in entries:
            key = f"{folder}/{name}" if folder else name
            if not key.endswith("/"):
                if key.startswith(prefix):
                    yield key, attrs
            elif key.startswith(prefix) or prefix.startswith(key):
                async for item in self._walk_folder(sftp, key[:-1], prefix):
                    yield item

    async def list_objects(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        with self.session.mapped(f"Cannot list {self._url(posixpath.join(self.root, prefix))}"):
            async for key, attrs in self._walk(prefix):
                if PARTIAL not in posixpath.basename(key):
                    yield ObjectInfo(key, attrs.size or 0, _modified(attrs))

    async def _partials(self, prefix: str = "") -> list[tuple[str, asyncssh.SFTPAttrs]]:
        return [(key, attrs) async for key, attrs in self._walk(prefix)
                if PARTIAL in posixpath.basename(key)]

    async def pending_uploads(self) -> list[str]:
        """Keys with an unfinished write (a partial file) left on the server."""
        with self.session.mapped(f"Cannot list unfinished writes in {self._url(self.root)}"):
            return sorted({key.split(PARTIAL)[0] for key, _ in await self._partials()})

    async def discard_incomplete(self, key: str) -> int:
        check_key(key)
        with self.session.mapped(f"Cannot discard unfinished writes of {self.describe(key)}"):
            found = [k for k, _ in await self._partials(key + PARTIAL)]
            return await self._remove_all(found)

    async def discard_stale_partials(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        with self.session.mapped(f"Cannot discard stale writes in {self._url(self.root)}"):
            stale = [k for k, attrs in await self._partials()
                     if (attrs.mtime or 0) <= cutoff]
            return await self._remove_all(stale)

    async def _remove_all(self, keys: list[str]) -> int:
        sftp = await self.session.client()
        for key in keys:
            with suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(posixpath.join(self.root, key))
        return len(keys)


async def _fsync(handle: asyncssh.SFTPClientFile) -> bool:
    try:
        await handle.fsync()
    except asyncssh.SFTPOpUnsupported:  # no fsync@openssh.com on this server
        return False
    return True


def _name(entry: asyncssh.SFTPName) -> str:
    name = entry.filename  # str: the client decodes names as UTF-8
    return name if isinstance(name, str) else name.decode()


def _modified(attrs: asyncssh.SFTPAttrs) -> datetime | None:
    return datetime.fromtimestamp(attrs.mtime, UTC) if attrs.mtime is not None else None


__all__ = ["PARTIAL", "SftpStorage"]
