"""A real local OAuth token endpoint for the GCS tests: it checks a service account's
JWT bearer grant as Google's does (RS256 signature by the account's key, issuer,
audience, scope, lifetime) and answers a token or `invalid_grant`. fake-gcs-server has
no auth at all, so this is where our side of it is proven."""

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.receivers import free_port

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@dataclass
class TokenServer:
    """Accepts grants signed by `key` for `email`; keeps the claims of each grant."""

    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    email: str = "backvault@test-project.iam.gserviceaccount.com"
    grants: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    port: int = 0

    @property
    def token_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def service_account(self, key: rsa.RSAPrivateKey | None = None) -> str:
        """A service account key file's JSON, signed with `key` (default: the right one)."""
        return json.dumps({
            "type": "service_account", "project_id": "test-project",
            "private_key_id": uuid.uuid4().hex, "private_key": pem(key or self.key),
            "client_email": self.email, "token_uri": self.token_uri})

    def answer(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != [GRANT]:
            return 400, {"error": "unsupported_grant_type"}
        try:
            claims = jwt.decode(form["assertion"][0], self.key.public_key(),
                                algorithms=["RS256"], audience=self.token_uri,
                                issuer=self.email, options={"require": ["exp", "iat"]})
        except (jwt.PyJWTError, KeyError):
            self.refused += 1
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT"}
        if claims["exp"] - claims["iat"] > 3600 or "devstorage" not in claims.get("scope", ""):
            return 400, {"error": "invalid_scope"}
        self.grants.append(claims)
        return 200, {"access_token": f"ya29.{uuid.uuid4().hex}", "expires_in": 3599,
                     "token_type": "Bearer"}

    def __enter__(self) -> "TokenServer":
        self.port = free_port()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                status, body = owner.answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
