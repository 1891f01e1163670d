"""A local peer for GCS resumable uploads: a real HTTP/1.1 server on a loopback socket that
answers a resumable session as GCS documents it
(https://cloud.google.com/storage/docs/performing-resumable-uploads), which
fake-gcs-server does not: it keeps what each chunk delivered (a body cut short is kept
down to a 256 KiB boundary, as GCS persists), answers 308 with `Range: bytes=0-N` (none
while it holds nothing), answers a status query (an empty PUT, `Content-Range: bytes
*/<total or *>`) without finishing anything, ignores bytes it already holds, refuses a start
past them, and makes the object only once the declared total has arrived. A cancelled
session answers 499, a forgotten one 404.

Faults are set per data PUT (counting every PUT that carries bytes, resends too) and per
status query, by index: cut the connection after K body bytes, answer a status instead,
stall before answering, or lose held bytes."""

import asyncio
import contextlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GRANULE = 256 * 1024
RANGE = re.compile(r"bytes (\*|(\d+)-(\d+))/(\*|\d+)")


@dataclass
class Fault:
    cut_after: int | None = None  # drop the connection after this many body bytes
    status: int | None = None  # answer this instead of taking the chunk
    stall: float = 0.0  # wait this long before answering
    rewind_to: int | None = None  # the session holds only this many bytes from now on


@dataclass
class Session:
    name: str
    data: bytearray = field(default_factory=bytearray)
    total: int | None = None
    done: dict[str, Any] | None = None  # the object resource, once finished


@dataclass
class Stored:
    data: bytes
    generation: int


class GcsPeer:
    def __init__(self) -> None:
        self.objects: dict[str, Stored] = {}
        self.sessions: dict[str, Session] = {}
        self.faults: dict[int, Fault] = {}  # by data PUT index
        self.query_faults: dict[int, Fault] = {}  # by status query index
        self.puts: list[str] = []  # Content-Range of every data PUT
        self.queries: list[str] = []  # Content-Range of every status query
        self.cancelled = 0
        self.port = 0
        self._generation = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "GcsPeer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, value = raw.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                if not await self._route(method, target, headers, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _route(self, method: str, target: str, headers: dict[str, str],
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answers one request; False: the connection is to be dropped."""
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(headers.get("content-length", "0"))
        if "transfer-encoding" in headers:
            return _reply(writer, 411, {"error": {"message": "length required"}})
        if url.path.startswith("/upload/") and "upload_id" in query:
            session = self.sessions.get(query["upload_id"])
            if session is None:
                await reader.readexactly(length)
                return _reply(writer, 404, {"error": {"message": "no such upload"}})
            if method == "DELETE":
                del self.sessions[query["upload_id"]]
                self.cancelled += 1
                return _reply(writer, 499, b"")
            return await self._chunk(session, headers, length, reader, writer)
        body = await reader.readexactly(length)
        if url.path.startswith("/upload/") and method == "POST":
            return self._start(query, body, headers.get("host", f"127.0.0.1:{self.port}"),
                               writer)
        return self._object(method, unquote(url.path), query, writer)

    def _start(self, query: dict[str, str], body: bytes, host: str,
               writer: asyncio.StreamWriter) -> bool:
        """A session at the address it was asked at (a proxy's too, as the emulator does)."""
        if query.get("uploadType") == "media":
            return _reply(writer, 200, self._finish(query["name"], body))
        upload_id = uuid.uuid4().hex
        self.sessions[upload_id] = Session(query["name"])
        location = f"http://{host}/upload/session?upload_id={upload_id}"
        return _reply(writer, 200, b"", {"Location": location})

    async def _chunk(self, session: Session, headers: dict[str, str], length: int,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        found = RANGE.fullmatch(headers.get("content-range", ""))
        if found is None:
            await reader.readexactly(length)
            return _reply(writer, 400, {"error": {"message": "bad Content-Range"}})
        is_query = found.group(1) == "*"
        log, faults = (self.queries, self.query_faults) if is_query else (self.puts, self.faults)
        fault = faults.pop(len(log), None) or Fault()
        log.append(found.group(0))
        if fault.rewind_to is not None:
            del session.data[fault.rewind_to:]
        if fault.status is not None:
            await reader.readexactly(length)
            return _reply(writer, fault.status, {"error": {"message": "fault"}})
        if not is_query:
            start = int(found.group(2))
            if start > len(session.data):
                await reader.readexactly(length)
                return _reply(writer, 400, {"error": {"message": "offset past held bytes"}})
            whole = await self._take(session, start, length, fault.cut_after, reader)
            if not whole:
                return False  # the connection went (or is dropped) before the body ended
        if found.group(4) != "*":
            session.total = int(found.group(4))
        answer = self._settle(session)
        if fault.cut_after is not None:
            return False  # the whole body arrived, its answer is lost
        await asyncio.sleep(fault.stall)
        return _reply(writer, *answer)

    async def _take(self, session: Session, start: int, length: int, cut_after: int | None,
                    reader: asyncio.StreamReader) -> bool:
        """Reads the body into the session; a body cut short (by the client, or here after
        `cut_after` bytes) is kept down to a 256 KiB boundary. False: the connection is gone."""
        wanted = length if cut_after is None else min(cut_after, length)
        try:
            body = await reader.readexactly(wanted)
        except asyncio.IncompleteReadError as exc:
            body = exc.partial
        whole = len(body) == length
        if not whole:
            body = body[: (start + len(body)) // GRANULE * GRANULE - start]
        held = len(session.data) - start
        if len(body) > held:
            session.data += body[held:]
        return whole

    def _settle(self, session: Session) -> tuple[int, bytes | dict[str, Any], dict[str, str]]:
        """The session's answer, finishing the object once the declared total is held."""
        held = len(session.data)
        if session.done is None and session.total is not None and held > session.total:
            return 400, {"error": {"message": "more bytes than the total"}}, {}
        if session.done is None and session.total is not None and held == session.total:
            session.done = self._finish(session.name, bytes(session.data))
            session.data = bytearray()
        if session.done is not None:
            return 200, session.done, {}
        return 308, b"", {"Range": f"bytes=0-{held - 1}"} if held else {}

    def _finish(self, name: str, data: bytes) -> dict[str, Any]:
        self._generation += 1
        self.objects[name] = Stored(data, self._generation)
        return self._resource(name)

    def _resource(self, name: str) -> dict[str, Any]:
        stored = self.objects[name]
        return {"kind": "storage#object", "name": name, "size": str(len(stored.data)),
                "generation": str(stored.generation),
                "updated": datetime.now(UTC).isoformat().replace("+00:00", "Z")}

    def _object(self, method: str, path: str, query: dict[str, str],
                writer: asyncio.StreamWriter) -> bool:
        if not path.startswith("/storage/v1/b/"):
            return _reply(writer, 404, {"error": {"message": "not found"}})
        parts = path.split("/", 6)  # "", storage, v1, b, bucket, o, name
        if len(parts) < 7:
            return _reply(writer, 200, {"kind": "storage#bucket", "name": parts[4]})
        stored = self.objects.get(parts[6])
        if stored is None:
            return _reply(writer, 404, {"error": {"message": "no such object"}})
        if method == "DELETE":
            if query.get("ifGenerationMatch", str(stored.generation)) != str(stored.generation):
                return _reply(writer, 412, {"error": {"message": "generation"}})
            del self.objects[parts[6]]
            return _reply(writer, 204, b"")
        if query.get("alt") == "media":
            return _reply(writer, 200, stored.data)
        return _reply(writer, 200, self._resource(parts[6]))


def _reply(writer: asyncio.StreamWriter, status: int, body: bytes | dict[str, Any],
           headers: dict[str, str] | None = None) -> bool:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:  # 499, GCS's "cancelled"
        reason = "Client Closed Request"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(data)}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if isinstance(body, dict):
        lines.append("Content-Type: application/json")
    with contextlib.suppress(ConnectionError):
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    return True
