"""The console reads through the JSON API itself, in process, with the user's own token.

So every page shows exactly what the API answers, under the same roles and limits, and
the console holds no second implementation of any query.
"""

from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request

# The in-process base URL; requests never leave the process.
INTERNAL_BASE = "http://console.internal"


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    data: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        """The error body's message, for showing in place of the data."""
        if isinstance(self.data, dict) and isinstance(self.data.get("error"), dict):
            return str(self.data["error"].get("message", "error"))
        return f"HTTP {self.status}"


def _client(request: Request) -> httpx.AsyncClient:
    client = (request.client.host, request.client.port) if request.client else ("127.0.0.1", 0)
    transport = httpx.ASGITransport(app=request.app, client=client)
    return httpx.AsyncClient(transport=transport, base_url=INTERNAL_BASE, timeout=60.0)


async def api_call(request: Request, method: str, path: str, token: str | None = None,
                   params: dict[str, Any] | None = None,
                   json: Any = None, data: dict[str, str] | None = None) -> ApiAnswer:
    """One API request on behalf of the signed-in user (or anonymous without a token)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ua = request.headers.get("user-agent")
    if ua:
        headers["User-Agent"] = ua
    clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
    async with _client(request) as client:
        response = await client.request(method, path, params=clean, json=json, data=data,
                                        headers=headers)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return ApiAnswer(response.status_code, body)


async def api_get(request: Request, token: str, path: str,
                  params: dict[str, Any] | None = None) -> ApiAnswer:
    return await api_call(request, "GET", path, token, params=params)
