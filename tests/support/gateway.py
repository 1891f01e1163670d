"""A misbehaving IPFS gateway in front of the real one: flips a byte, drops a block, ends
the CAR early (with status 200), or redirects elsewhere."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from app.services.content.formats.cid import read_varint


def split_car(car: bytes) -> tuple[bytes, list[bytes]]:
    """The header and the sections of a CAR, as bytes."""
    header_length, pos = read_varint(car, 0)
    pos += header_length
    header, sections = car[:pos], []
    while pos < len(car):
        length, start = read_varint(car, pos)
        sections.append(car[pos:start + length])
        pos = start + length
    assert len(sections) > 1, "need a CAR of several blocks"
    return header, sections


class TamperingGateway:
    MODES = ("flip", "drop", "truncate", "redirect", "pass")

    def __init__(self, upstream: str, mode: str, redirect_to: str = "") -> None:
        assert mode in self.MODES
        self.upstream, self.mode, self.redirect_to = upstream.rstrip("/"), mode, redirect_to
        self.requests = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                gateway.requests += 1
                if gateway.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", gateway.redirect_to + self.path)
                    self.end_headers()
                    return
                answer = httpx.get(gateway.upstream + self.path, headers={
                    "Accept": self.headers.get("Accept", "*/*")}, timeout=30)
                body = gateway.tamper(answer.content)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tamper(self, body: bytes) -> bytes:
        if self.mode == "flip":
            at = len(body) - 10
            return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1:]
        if self.mode == "drop":
            header, sections = split_car(body)
            return header + b"".join(sections[:1] + sections[2:])
        if self.mode == "truncate":  # a well-formed CAR that simply stops
            header, sections = split_car(body)
            return header + b"".join(sections[:len(sections) // 2])
        return body

    def __enter__(self) -> "TamperingGateway":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
