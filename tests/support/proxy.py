"""A loopback TCP proxy that can cut every connection after some bytes (an endpoint that
goes away mid-transfer) or on demand while blocked (one that is unreachable), with real
sockets."""

import asyncio
import contextlib


class CuttingProxy:
    def __init__(self, target_port: int, cut_after_bytes: int | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after_bytes
        self.forwarded = 0
        self.cut = asyncio.Event()
        self.blocked = False
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def block(self) -> None:
        """Cut every connection now and refuse new ones until `unblock`."""
        self.blocked = True
        for writer in list(self.writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()

    def unblock(self) -> None:
        self.blocked = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    upstream: bool) -> None:
        try:
            while data := await reader.read(65536):
                if upstream:
                    self.forwarded += len(data)
                    if self.cut_after is not None and self.forwarded > self.cut_after:
                        self.cut.set()
                        await self.close()
                        return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        if self.cut.is_set() or self.blocked:
            client_writer.close()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1",
                                                                         self.target_port)
        except OSError:
            client_writer.close()
            return
        self.writers |= {client_writer, server_writer}
        try:
            await asyncio.gather(self.pipe(client_reader, server_writer, True),
                                 self.pipe(server_reader, client_writer, False))
        finally:
            self.writers -= {client_writer, server_writer}

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self.writers.clear()
