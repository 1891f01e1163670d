"""Helpers of the audit-log tests: records of one test found by its user agent, and a
fixture checking the hash chain around a test."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from app.models.audit import AuditRecord
from app.services.ops import audit


def collection() -> Any:
    return AuditRecord.get_pymongo_collection()


def agent() -> dict[str, str]:
    """A user agent unique to one test, so its records can be found among all others."""
    return {"User-Agent": f"audit-test/{uuid.uuid4().hex}"}


async def records_of(headers: dict[str, str]) -> list[dict[str, Any]]:
    cursor = collection().find({"userAgent": headers["User-Agent"]}).sort("_id", 1)
    return [doc async for doc in cursor]


def schedule_body() -> dict[str, Any]:
    return {"name": f"audit-{uuid.uuid4().hex[:12]}", "kind": "health_check",
            "cron": "0 3 * * *", "enabled": False}


@pytest.fixture
async def chain_ok(app: FastAPI) -> AsyncIterator[None]:
    """The chain verifies before and after the test (tamper tests put records back)."""
    assert (await audit.verify_chain()).ok
    yield
    report = await audit.verify_chain()
    assert report.ok, report.message
