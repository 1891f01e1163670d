"""A loopback HTTP proxy in front of Azurite that cuts or holds the Put Block requests of
chosen blocks (by the index in their block id) part-way through their body, and forwards
everything else as it is: one block of an upload fails, or several stay in flight."""

import asyncio
import base64
import contextlib
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

PART = 64 * 1024


def block_index(request_line: bytes) -> int | None:
    """The block number of a Put Block request (our ids end in -NNNNNN), else None."""
    try:
        target = request_line.split(b" ")[1].decode()
        block_id = parse_qs(urlsplit(target).query).get("blockid")
        if not block_id:
            return None
        return int(base64.b64decode(block_id[0]).decode().rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


class BlockFaultProxy:
    def __init__(self, target_port: int, *, cut: frozenset[int] = frozenset(),
                 hold: frozenset[int] = frozenset(), after_bytes: int = 1024 * 1024,
                 cut_limit: int | None = None) -> None:
        self.target_port = target_port
        self.cut_blocks, self.hold_blocks, self.after_bytes = cut, hold, after_bytes
        self.cut_limit = cut_limit  # cut this many requests, then let them through
        self.release = asyncio.Event()  # lets held requests go on
        self.cuts = 0  # Put Block requests cut so far
        self.held = 0  # requests held right now
        self.forwarded: list[int] = []  # blocks whose whole body reached the server
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def until(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self.writers.clear()

    async def _requests(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """Client to server, one request at a time (the SDK always sends a length)."""
        try:
            await self._forward_requests(reader, writer)
        finally:
            writer.close()  # the client is done: so is the server's side

    async def _forward_requests(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            index = block_index(head.split(b"\r\n", 1)[0])
            writer.write(head)
            remaining, sent = content_length(head), 0
            while remaining:
                if index is not None and sent >= self.after_bytes:
                    if index in self.cut_blocks and (self.cut_limit is None
                                                     or self.cuts < self.cut_limit):
                        self.cuts += 1
                        raise ConnectionAbortedError  # both sides are aborted
                    if index in self.hold_blocks and not self.release.is_set():
                        self.held += 1
                        try:
                            await self.release.wait()
                        finally:
                            self.held -= 1
                data = await reader.read(min(PART, remaining))
                if not data:
                    return
                remaining -= len(data)
                sent += len(data)
                writer.write(data)
                await writer.drain()
            if index is not None:
                self.forwarded.append(index)

    async def _responses(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(PART):
            writer.write(data)
            await writer.drain()

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1",
                                                                         self.target_port)
        except OSError:
            client_writer.close()
            return
        self.writers |= {client_writer, server_writer}
        try:
            await asyncio.gather(self._requests(client_reader, server_writer),
                                 self._responses(server_reader, client_writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
            self.writers -= {client_writer, server_writer}
