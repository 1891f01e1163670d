"""Waiting on jobs through the API."""

import asyncio
from typing import Any

import httpx

FINISHED = ("completed", "failed", "interrupted")


async def wait_job(client: httpx.AsyncClient, headers: dict[str, str], job_id: str,
                   timeout: float = 120) -> dict[str, Any]:
    """The job as the API shows it once it has finished (fails after `timeout` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job: dict[str, Any] = (await client.get(f"/api/backups/jobs/{job_id}",
                                                headers=headers)).json()
        if job["status"] in FINISHED:
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.1)
