"""Request limits applied before the application reads a body: size, time, nesting, token.

A pure ASGI middleware (not BaseHTTPMiddleware) so that responses keep streaming.
"""

import asyncio
import json
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import (
    AppError,
    AuthenticationError,
    BadRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    error_body,
)
from app.services.access.auth import decode_token
from app.services.access.session import bearer_token, cookie_token

# The only /api operation that takes a body without a token.
OPEN_BODY_ROUTES = {("POST", "/api/auth/token")}
_JSON_SPECIAL = re.compile(rb'["\\\[\]{}]')
_OPENERS = (ord("["), ord("{"))
_CLOSERS = (ord("]"), ord("}"))
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether arrays/objects nest deeper than limit, brackets inside strings not counted."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth, in_string, skip_to = 0, False, -1
    # Visits only quotes, backslashes and brackets: linear in the body, no backtracking.
    for match in _JSON_SPECIAL.finditer(body):
        pos = match.start()
        if pos < skip_to:
            continue
        char = body[pos]
        if in_string:
            if char == _BACKSLASH:
                skip_to = pos + 2
            elif char == _QUOTE:
                in_string = False
        elif char == _QUOTE:
            in_string = True
        elif char in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif char in _CLOSERS:
            depth -= 1
    return False


def _is_json(content_type: str | None) -> bool:
    # FastAPI parses a body without a content type as JSON too.
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class RequestLimits:
    """Refuses oversized (413), slow (408), too deeply nested (400) and anonymous (401) bodies."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            if self._has_body(headers):
                self._check_token(scope, headers)
                body = await self._read_body(receive)
                if body is None:  # the client went away
                    return
                if _is_json(headers.get("content-type")) and json_too_deep(
                        body, self.settings.http.max_json_depth):
                    raise BadRequestError("JSON nested deeper than "
                                          f"{self.settings.http.max_json_depth} levels")
                receive = _replay(body, receive)
        except AppError as refusal:  # raised by the checks above, never by the app
            await _send_refusal(send, refusal)
            return
        await self.app(scope, receive, send)

    def _has_body(self, headers: Headers) -> bool:
        """From the headers alone; a declared length over the limit is refused at once."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return True
        declared = headers.get("content-length")
        if declared is None:
            return False
        if not declared.strip().isdigit():
            raise BadRequestError("Content-Length is not a number")
        length = int(declared)
        if length > self.settings.http.max_body_bytes:
            raise self._too_large()
        return length > 0

    def _too_large(self) -> PayloadTooLargeError:
        limit = self.settings.http.max_body_bytes
        return PayloadTooLargeError(f"Request body is larger than {limit} bytes",
                                    {"maxBytes": limit})

    def _check_token(self, scope: Scope, headers: Headers) -> None:
        """Bodies for /api need a valid token (bearer or session cookie) first: signature and
        expiry, no catalog."""
        path: str = scope["path"]
        if not (path == "/api" or path.startswith("/api/")):
            return
        if (scope["method"], path.rstrip("/")) in OPEN_BODY_ROUTES:
            return
        # The console's session cookie counts too; its CSRF check comes with the route.
        token = bearer_token(headers) or cookie_token(headers)
        if token is None:
            raise AuthenticationError("Not authenticated")
        decode_token(token, self.settings)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or an AppError once it passes the limit or the time allowed."""
        limit = self.settings.http.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.http.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk: bytes = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise self._too_large()
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError as exc:
            raise RequestTimeoutError("Request body did not arrive within "
                                      f"{self.settings.http.body_timeout_seconds:g} seconds"
                                      ) from exc


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the server's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_refusal(send: Send, refusal: AppError) -> None:
    payload = json.dumps(error_body(refusal.code, refusal.message, refusal.details)).encode()
    # The body was not (all) read: close the connection rather than read the rest.
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in (refusal.headers or {}).items()]
    await send({"type": "http.response.start", "status": refusal.status_code,
                "headers": headers})
    await send({"type": "http.response.body", "body": payload})
