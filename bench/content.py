"""`make bench-content`: content backups of IPFS items against `ipfs cat` on the node and a
plain (unverified) HTTP download from the same gateway. Prints a table and writes
bench/results/content.{json,md}.

BENCH_SMALL_FILES (default 1000) files of 4 KiB, and one file of BENCH_BIG_MB (200).
"""

import asyncio
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from app.config import Settings
from app.models.content import ContentBackupCreate
from app.services.access.auth import system_user_id
from app.services.catalog.db import open_catalog
from app.services.content.backup import back_up_content
from app.services.jobs.runner import Progress
from app.services.storage import LocalStorage
from bench.run import RESULTS, say

IPFS_API = os.environ.get("BACKVAULT_IPFS_API", "http://127.0.0.1:55001")
GATEWAY = os.environ.get("BACKVAULT_IPFS_GATEWAY", "http://127.0.0.1:58080")
MONGO_URI = os.environ.get("BACKVAULT_MONGO_URI", "mongodb://127.0.0.1:57017/")
TOOLS = Path(os.environ.get("BACKVAULT_TOOLS_BIN", Path(__file__).parents[1] / ".data/bin"))
SMALL = int(os.environ.get("BENCH_SMALL_FILES", "1000"))
BIG_MB = int(os.environ.get("BENCH_BIG_MB", "200"))
CONCURRENCY = 3


async def add(files: list[tuple[str, bytes]]) -> list[str]:
    async with httpx.AsyncClient(timeout=600) as client:
        answer = await client.post(f"{IPFS_API}/api/v0/add",
                                    params={"pin": "true", "cid-version": "1",
                                            "raw-leaves": "true"},
                                    files=[("file", f) for f in files])
    by_name = {e["Name"]: e["Hash"] for e in map(json.loads, answer.text.splitlines())}
    return [by_name[name] for name, _ in files]


async def backvault(cids: list[str], work: Path) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one content backup of cids into a fresh catalog and store."""
    settings = Settings.model_validate({
        "system": {"environment": "development", "log_level": "warning", "enabled": False},
        "catalog": {"mongo_uri": SecretStr(MONGO_URI),
                    "database": f"bench_content_{uuid.uuid4().hex[:8]}", "source_name": ""},
        "storage": {"local_dir": str(work / f"store-{uuid.uuid4().hex[:6]}")},
        "content": {"ipfs_gateways": [GATEWAY], "concurrency": CONCURRENCY,
                    "max_file_size": (BIG_MB + 16) * 2**20,
                    "sources": [{"name": "bench", "kind": "static", "items": cids}]}})
    client = await open_catalog(settings)
    try:
        started = time.monotonic()
        backup = await back_up_content(settings, LocalStorage(settings.storage.local_dir),
                                       Progress(), ContentBackupCreate(source="bench"),
                                       admin=await system_user_id())
        wall = time.monotonic() - started
        assert backup.error is None, backup.error
        return wall, {c.name: c.count for c in backup.contents}
    finally:
        await client.drop_database(settings.catalog.database)
        await client.close()


def ipfs_cat(cids: list[str]) -> float:
    """`ipfs cat` of each CID on the node, CONCURRENCY at a time, output discarded."""
    started = time.monotonic()
    subprocess.run(["xargs", "-P", str(CONCURRENCY), "-n", "50", str(TOOLS / "ipfs"),
                    "--api", "/ip4/127.0.0.1/tcp/" + IPFS_API.rsplit(":", 1)[1], "cat"],
                   input="\n".join(cids), text=True, stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - started


async def plain_http(cids: list[str]) -> float:
    """Unverified GET of each file from the gateway, CONCURRENCY at a time."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient, cid: str) -> None:
        async with limit, client.stream("GET", f"{GATEWAY}/ipfs/{cid}") as response:
            response.raise_for_status()
            async for _ in response.aiter_raw():
                pass

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(one(client, c) for c in cids))
    return time.monotonic() - started


async def measure() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="backvault-bench-content-"))
    say(f"adding {SMALL} files of 4 KiB and one of {BIG_MB} MB to Kubo...")
    small = await add([(f"s{i}", os.urandom(4096)) for i in range(SMALL)])
    big_path = work / "big.bin"
    with big_path.open("wb") as out:
        for _ in range(BIG_MB):
            out.write(os.urandom(2**20))
    big = (await add([("big.bin", big_path.read_bytes())]))[0]
    big_path.unlink()
    results: dict[str, Any] = {"smallFiles": SMALL, "bigMB": BIG_MB,
                               "concurrency": CONCURRENCY, "cores": os.cpu_count()}
    wall, counts = await backvault(small, work)
    results["backvaultSmall"] = {"seconds": round(wall, 2), "itemsPerSecond":
                                 round(SMALL / wall, 1), "counts": counts}
    wall = ipfs_cat(small)
    results["ipfsCatSmall"] = {"seconds": round(wall, 2), "itemsPerSecond": round(SMALL / wall, 1)}
    wall = await plain_http(small)
    results["httpSmall"] = {"seconds": round(wall, 2), "itemsPerSecond": round(SMALL / wall, 1)}
    wall, counts = await backvault([big], work)
    results["backvaultBig"] = {"seconds": round(wall, 2), "mbPerSecond": round(BIG_MB / wall, 1)}
    wall = ipfs_cat([big])
    results["ipfsCatBig"] = {"seconds": round(wall, 2), "mbPerSecond": round(BIG_MB / wall, 1)}
    wall = await plain_http([big])
    results["httpBig"] = {"seconds": round(wall, 2), "mbPerSecond": round(BIG_MB / wall, 1)}
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return results


def main() -> None:
    results = asyncio.run(measure())
    r = results
    lines = [
        f"IPFS content, Kubo offline on loopback; {r['cores']} cores; concurrency "
        f"{r['concurrency']}; Backvault verifies every block, compresses (zstd) and stores.",
        "",
        "| what | Backvault (verified, stored) | `ipfs cat` on the node | plain HTTP GET |",
        "|---|---|---|---|",
        f"| {r['smallFiles']} files of 4 KiB, items/s | {r['backvaultSmall']['itemsPerSecond']} "
        f"| {r['ipfsCatSmall']['itemsPerSecond']} | {r['httpSmall']['itemsPerSecond']} |",
        f"| one {r['bigMB']} MB file, MB/s | {r['backvaultBig']['mbPerSecond']} | "
        f"{r['ipfsCatBig']['mbPerSecond']} | {r['httpBig']['mbPerSecond']} |",
    ]
    text = "\n".join(lines)
    say(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "content.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "content.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
