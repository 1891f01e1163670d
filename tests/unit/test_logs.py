"""Every log line is one JSON object, the libraries' ones too (finding 11)."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from app.logs import configure_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("info", buffer)
    yield buffer
    configure_logging("warning")  # back to stderr for whatever runs next


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_stdlib_and_structlog_lines_are_json(stream: io.StringIO) -> None:
    logging.getLogger("apscheduler.scheduler").info(
        'Added job "%s" to job store "%s"', "health", "default")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000",
                                             "GET", "/healthz", "1.1", 200)
    structlog.get_logger("app.services.jobs").info("job started", kind="database")
    logging.getLogger("httpx").debug("below the level: not written")

    records = lines(stream)
    assert [(r["level"], r["logger"]) for r in records] == [
        ("info", "apscheduler.scheduler"), ("warning", "uvicorn.error"),
        ("info", "uvicorn.access"), ("info", "app.services.jobs")]
    assert records[0]["event"] == 'Added job "health" to job store "default"'
    assert records[2]["event"] == '10.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'
    assert records[3]["kind"] == "database"
    assert all("timestamp" in r for r in records)


def test_uvicorn_handlers_of_its_own_are_replaced(stream: io.StringIO) -> None:
    # What uvicorn's default log config leaves behind: a plain-text handler, no propagation.
    access = logging.getLogger("uvicorn.access")
    plain = io.StringIO()
    access.addHandler(logging.StreamHandler(plain))
    access.propagate = False
    configure_logging("info", stream)
    access.info("GET /api/backups 200")
    assert plain.getvalue() == ""
    assert lines(stream)[-1]["event"] == "GET /api/backups 200"


def test_secrets_redacted_in_both_kinds(stream: io.StringIO) -> None:
    structlog.get_logger("app.x").warning("connect", uri="postgresql://u:pw1@h/db",
                                          password="pw2", token="pw3")
    logging.getLogger("httpx").warning(
        "retrying postgresql://u:pw4@h/db?password=pw5&sslmode=require")
    logging.getLogger("uvicorn.access").info("GET /download?token=pw6&x=1")
    text = stream.getvalue()
    for secret in ("pw1", "pw2", "pw3", "pw4", "pw5", "pw6"):
        assert secret not in text
    records = lines(stream)
    assert records[0]["uri"] == "<redacted>"
    assert records[1]["event"] == ("retrying postgresql://u:<redacted>@h/db"
                                   "?password=<redacted>&sslmode=require")


def test_driver_payloads_stay_out_at_debug() -> None:
    buffer = io.StringIO()
    configure_logging("debug", buffer)
    try:
        logging.getLogger("pymongo.command").debug('{"insert": "users", "passwordHash": "x"}')
        logging.getLogger("apscheduler.scheduler").debug("Looking for jobs to run")
    finally:
        configure_logging("warning")
    assert [r["logger"] for r in lines(buffer)] == ["apscheduler.scheduler"]


def test_request_urls_stay_out_at_info(stream: io.StringIO) -> None:
    # A GCS resumable session URL is a credential for its upload; a SAS query signs requests.
    logging.getLogger("httpx").info("HTTP Request: PUT http://gcs/upload?upload_id=SESSION1")
    logging.getLogger("azure.core.pipeline").info("Request URL: 'https://a/c/b?sig=SAS1'")
    logging.getLogger("app.x").warning("retrying http://gcs/upload?upload_id=SESSION2&sig=SAS2")
    text = stream.getvalue()
    for secret in ("SESSION1", "SAS1", "SESSION2", "SAS2"):
        assert secret not in text
    assert [r["logger"] for r in lines(stream)] == ["app.x"]
