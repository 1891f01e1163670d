"""A job's error says what failed in words, never as `ClassName: message` (finding 11)."""

import asyncpg
import httpx
import pytest
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from app.errors import ConflictError
from app.services.jobs.runner import error_text


@pytest.mark.parametrize(("exc", "expected"), [
    (ConflictError("Backup is in use"), "Backup is in use"),
    (ValueError("schemaOnly and dataOnly cannot both be set"),
     "schemaOnly and dataOnly cannot both be set"),
    (RuntimeError("the archive ended early"), "the archive ended early"),
    (TimeoutError(), "The job timed out"),
    (OSError(28, "No space left on device", "/spool/x"),
     "Storage or network error: No space left on device: /spool/x"),
    (ConnectionResetError(104, "Connection reset by peer"),
     "Storage or network error: Connection reset by peer"),
    (httpx.ConnectError("All connection attempts failed"),
     "Storage or network error: All connection attempts failed"),
    (asyncpg.UndefinedTableError('relation "x" does not exist'),
     'Database error: relation "x" does not exist'),
    (ServerSelectionTimeoutError("127.0.0.1:1: connection refused"),
     "Database error: 127.0.0.1:1: connection refused"),
    (OperationFailure("Authentication failed.", 18,
                      {"ok": 0.0, "errmsg": "Authentication failed.", "code": 18}),
     "Database error: Authentication failed."),
    (KeyError("phase"), "Internal error: 'phase'"),
    (AssertionError(), "Internal error (see the service log)"),
])
def test_error_text_in_words(exc: BaseException, expected: str) -> None:
    assert error_text(exc) == expected


@pytest.mark.parametrize("exc", [ValueError("bad"), OSError("gone"), RuntimeError(""),
                                 ZeroDivisionError("division by zero"), Exception()])
def test_no_class_name_prefix(exc: BaseException) -> None:
    text = error_text(exc)
    assert text
    assert not text.startswith(f"{type(exc).__name__}")
