"""The ASGI middleware that writes an audit record for every state-changing /api request
and every login attempt, including the ones refused by other middlewares.

It never reads bodies, tokens or headers other than User-Agent into a record. The user
comes from `request.state.user` (set by authentication), else from a valid bearer token,
else `request.state.login_username` (set by the token route). A route may add safe
details with `request.state.audit_details = {...}` (short values; secret-looking keys are
redacted). Writing the record is bounded in time and never fails the request.
"""

import asyncio
import re
import uuid
from typing import Any
from urllib.parse import parse_qsl

import structlog
from beanie import PydanticObjectId
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.models.user import User
from app.services.access.auth import decode_token
from app.services.access.session import SAFE_METHODS, bearer_token
from app.services.ops import audit

log = structlog.get_logger(__name__)

AUDITED_PREFIXES = ("/api/",)
LOGIN_PATH = "/api/auth/token"
WRITE_TIMEOUT_SECONDS = 30.0
# Query parameters the API defines; any other one's value is not recorded (it could be
# a credential under any name: jwt, sig, uri, code ...).
KNOWN_PARAMS = frozenset({"page", "limit", "status", "type", "kind", "source", "from", "to",
                          "wait", "force", "reason", "prefix", "format", "dryRun", "deep",
                          "target", "user", "action", "outcome"})
SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature|session|cookie"
                         r"|otp|identity", re.IGNORECASE)
REDACTED = "<redacted>"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MAX_PARAMS, MAX_VALUE, MAX_AGENT = 20, 200, 256


def is_audited(method: str, path: str) -> bool:
    return method not in SAFE_METHODS and path.startswith(AUDITED_PREFIXES)


def clean(value: Any, limit: int = MAX_VALUE) -> str:
    """Printable text of at most `limit` characters that BSON can store."""
    text = str(value).encode("utf-8", "replace").decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def target_of(scope: Scope) -> dict[str, str]:
    """Path parameters, plus query parameters: the API's own shown, any other redacted."""
    target: dict[str, str] = {}
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True)[:MAX_PARAMS]:
        key = clean(name, 64)
        secret = key not in KNOWN_PARAMS or SECRET_NAME.search(key)
        shown = REDACTED if secret else clean(value)
        target[key] = f"{target[key]},{shown}"[:MAX_VALUE] if key in target else shown
    for name, value in (scope.get("path_params") or {}).items():
        target[clean(name, 64)] = clean(value)
    return target


def safe_details(raw: Any) -> dict[str, Any]:
    """A route's `audit_details`, with short primitive values and secret-looking keys hidden."""
    if not isinstance(raw, dict):
        return {}
    details: dict[str, Any] = {}
    for name, value in list(raw.items())[:MAX_PARAMS]:
        key = clean(name, 64)
        if SECRET_NAME.search(key):
            details[key] = REDACTED
        elif value is None or isinstance(value, bool | int | float) and abs(value) < 2**53:
            details[key] = value
        else:
            details[key] = clean(value, 500)
    return details


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _user_from_token(scope: Scope) -> User | None:
    """The user of a valid bearer token, for requests refused before authentication ran."""
    token = bearer_token(Headers(scope=scope))
    app = scope.get("app")
    settings: Settings | None = getattr(getattr(app, "state", None), "settings", None)
    if token is None or settings is None:
        return None
    try:
        claims = decode_token(token, settings)
        return await User.get(PydanticObjectId(claims.user_id))
    except Exception:  # an invalid token is simply no user
        return None


async def build_entry(scope: Scope, status_code: int, time: Any, request_id: str,
                      ) -> dict[str, Any]:
    """The record's stored fields (camelCase), from the scope after the app ran."""
    state: dict[str, Any] = scope.get("state") or {}
    method, path = scope["method"], scope["path"]
    route = scope.get("route")
    template = getattr(route, "path", None) if route is not None else None
    user = state.get("user")
    if not isinstance(user, User):
        user = await _user_from_token(scope)
    username = user.username if user else state.get("login_username")
    client = scope.get("client")
    agent = _header(scope, b"user-agent")
    return {
        "v": 1, "time": time,
        "userId": str(user.id) if user else None,
        "username": clean(username, 64) if username else None,
        "role": user.role.value if user else None,
        "action": ("login" if path == LOGIN_PATH and method == "POST"
                   else f"{method} {clean(template or path)}"),
        "method": method, "path": clean(path),
        "target": target_of(scope),
        "client": clean(client[0], 64) if client else None,
        "userAgent": clean(agent, MAX_AGENT) if agent is not None else None,
        "statusCode": status_code,
        "outcome": audit.outcome_for(status_code).value,
        "requestId": request_id,
        "details": safe_details(state.get("audit_details")),
    }


class AuditTrail:
    """Pure ASGI, so streaming responses keep streaming; add it last (outermost)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._writes: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_audited(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        time = audit.audit_time()
        given = _header(scope, b"x-request-id")
        request_id = given if given and REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {}).setdefault("request_id", request_id)
        status: list[int] = []

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = [*message.get("headers", []),
                           (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The app raised before answering: the outer error handler answers 500.
            write = asyncio.ensure_future(
                self._write(scope, status[0] if status else 500, time, request_id))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
            await asyncio.shield(write)  # cancelled (client gone): the write still finishes

    async def _write(self, scope: Scope, status_code: int, time: Any, request_id: str) -> None:
        action = f"{scope['method']} {clean(scope['path'])}"
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                await audit.append(await build_entry(scope, status_code, time, request_id))
        except Exception as exc:
            log.error("audit record not written", action=action, status_code=status_code,
                      request_id=request_id, error_type=type(exc).__name__)
