"""Structured JSON logs, with secret-looking keys redacted as a second line of defence.

Every line is one JSON object with `level`, `logger` and `event`: structlog's own events
and the standard library's records (APScheduler, uvicorn, httpx) go through the same
handler on the root logger, so no plain-text line sits among the JSON ones."""

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|api[_-]?key|uri|identity",
                         re.IGNORECASE)
# Inside free text (a third-party message, an access log line): a URI's user-info password
# and secret-named query or key=value parameters.
URI_PASSWORD = re.compile(r"(?<=://)([^/@\s:]*):[^/@\s]*@")
SECRET_PARAMS = re.compile(
    r"\b([\w-]*(?:pass(?:word)?|secret|token|api[_-]?key|upload_id|sig|signature)[\w-]*)"
    r"=[^&\s\"']+", re.IGNORECASE)
# Loggers that uvicorn may have given handlers of their own (plain text) before we run.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# At debug level these write whole commands and requests (user documents, signed headers).
PAYLOAD_LOGGERS = ("pymongo", "botocore", "aiobotocore", "s3transfer", "urllib3")
# At info level these write every request URL (GCS resumable sessions, SAS queries).
URL_LOGGERS = ("httpx", "httpcore", "azure", "asyncssh")


def _scrub(text: str) -> str:
    return SECRET_PARAMS.sub(r"\1=<redacted>",
                             URI_PASSWORD.sub(r"\1:<redacted>@", text))


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key != "event" and SECRET_KEYS.search(key):
            event[key] = "<redacted>"
    for text in ("event", "exception"):
        if isinstance(event.get(text), str):
            event[text] = _scrub(event[text])
    return event


def _formatter() -> logging.Formatter:
    """Renders both kinds of record: structlog's event dicts and plain stdlib records."""
    foreign: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact,
            structlog.processors.JSONRenderer(),
        ],
    )


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on stderr (or stream) at level, for our loggers and every library's."""
    numeric = logging.getLevelName(level.upper())
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_formatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    for name in URL_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    for name in UVICORN_LOGGERS:
        # Their own handlers would print plain text; the root handler renders them.
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
