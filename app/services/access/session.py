"""The browser session of the console: the JWT in an httpOnly cookie, and its CSRF token
(the API accepts both; the console sets them).

The CSRF token is an HMAC of the session token under the JWT secret, so it needs no
storage, is bound to one session and changes with it. Pages carry it in a meta tag;
htmx and console.js echo it in the `X-CSRF-Token` header of every state-changing request.
"""

import base64
import hashlib
import hmac

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import Response

from app.config import Settings

SESSION_COOKIE = "backvault_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_token(headers: Headers) -> str | None:
    """The session token from the Cookie header, without parsing anything else."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value
    return None


def bearer_token(headers: Headers) -> str | None:
    """The token of an `Authorization: Bearer` header, if any."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def csrf_token(session_token: str, settings: Settings) -> str:
    """The CSRF token that belongs to this session."""
    key = settings.auth.jwt_secret.get_secret_value().encode()
    digest = hmac.new(key, b"csrf:" + session_token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_ok(headers: Headers, session_token: str, settings: Settings) -> bool:
    """Whether the request echoes this session's CSRF token (constant-time compare)."""
    sent = headers.get(CSRF_HEADER, "")
    return bool(sent) and hmac.compare_digest(sent, csrf_token(session_token, settings))


def set_session(response: Response, conn: HTTPConnection, token: str, lifetime: int) -> None:
    """The session cookie: httpOnly, SameSite=Strict, Secure over https, lives as the JWT."""
    response.set_cookie(SESSION_COOKIE, token, max_age=lifetime, path="/", httponly=True,
                        samesite="strict", secure=conn.url.scheme == "https")


def clear_session(response: Response, conn: HTTPConnection) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=conn.url.scheme == "https")
