"""Screenshots of the console and its cold-load figures, in Debian's headless Chromium.

Run with the local services up (`make services`):

    set -a && eval "$(scripts/services env)" && set +a && .venv/bin/python scripts/screenshots.py

It starts a real server with demo data (a PostgreSQL source with good backups, a broken
source with a failed one, two schedules), writes docs/screenshots/*.png at desktop (1280)
and phone (390) width, and prints the overview's page weight (bytes transferred on a cold
load, from Chromium's network events) and its first-contentful-paint.
"""

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Browser, Page  # noqa: E402

from tests.support.browser import (  # noqa: E402
    DESKTOP,
    OWNER,
    PHONE,
    ConsoleServer,
    chromium,
    console_server,
    sign_in,
)

OUT = ROOT / "docs" / "screenshots"
BROKEN = {"name": "billing", "kind": "postgres",
          "uri": "postgresql://nobody:nothing@127.0.0.1:1/billing"}


def _wait_job(server: ConsoleServer, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = server.api("GET", f"/api/backups/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def demo_data(server: ConsoleServer) -> str:
    """Backups, a failure and schedules; the id of a completed, verified backup."""
    backup_id = ""
    for source in ("shop", "shop", "billing", "shop"):
        job = server.api("POST", "/api/backups/database", json={"source": source}).json()
        done = _wait_job(server, job["id"])
        if done["status"] == "completed":
            backup_id = done["backupId"]
    verify = server.api("POST", f"/api/backups/{backup_id}/verify").json()
    _wait_job(server, verify["id"])
    for name, cron, sources in (("nightly-shop", "0 2 * * *", ["shop"]),
                                ("hourly-billing", "15 * * * *", ["billing"])):
        server.api("POST", "/api/schedules", json={"name": name, "kind": "database",
                                                   "cron": cron, "sources": sources})
    return backup_id


def shoot(browser: Browser, server: ConsoleServer, backup_id: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport, device_scale_factor=1)
        page = context.new_page()
        sign_in(page, server.base, OWNER)
        for name, path in (("overview", "/"), ("backup", f"/backups/{backup_id}"),
                           ("schedules", "/schedules")):
            page.goto(server.base + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(OUT / f"{name}-{label}.png"), full_page=True)
        context.close()


def cold_load(browser: Browser, server: ConsoleServer) -> tuple[int, float, int, float]:
    """Bytes transferred, first-contentful-paint (ms), requests and time to the first byte
    of the page (ms) of a cold overview load."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, server.base, OWNER)
    cookies = context.cookies()
    context.close()
    # A fresh context: empty cache, only the session cookie.
    context = browser.new_context(viewport=DESKTOP)
    context.add_cookies(cookies)  # type: ignore[arg-type]
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    sizes: dict[str, int] = {}
    cdp.on("Network.loadingFinished",
           lambda event: sizes.__setitem__(event["requestId"], int(event["encodedDataLength"])))
    page.goto(server.base + "/", wait_until="load")
    fcp = _first_paint(page)
    ttfb: float = page.evaluate("performance.getEntriesByType('navigation')[0].responseStart")
    total = sum(sizes.values())
    context.close()
    return total, fcp, len(sizes), ttfb


def _first_paint(page: Page) -> float:
    page.wait_for_function(
        "performance.getEntriesByName('first-contentful-paint').length > 0")
    value: float = page.evaluate(
        "performance.getEntriesByName('first-contentful-paint')[0].startTime")
    return value


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="backvault-shots-") as tmp, \
            console_server(Path(tmp), extra_sources=[BROKEN]) as server, \
            chromium() as browser:
        backup_id = demo_data(server)
        shoot(browser, server, backup_id)
        runs = [cold_load(browser, server) for _ in range(3)]
    for name in sorted(p.name for p in OUT.glob("*.png")):
        sys.stdout.write(f"wrote docs/screenshots/{name}\n")
    for weight, fcp, requests, ttfb in runs:
        sys.stdout.write(f"overview cold load: {weight} bytes in {requests} requests, "
                         f"first-contentful-paint {fcp:.0f} ms (first byte of the page "
                         f"{ttfb:.0f} ms)\n")


if __name__ == "__main__":
    main()
