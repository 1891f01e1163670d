"""Watch an event loop's responsiveness: a ticker that records the longest gap between its
ticks while other work runs on the same loop.

Run as a module (`python -m tests.support.event_loop URL`) it sends one notification to
URL in a fresh process (so apprise is imported for the first time) while watching, and
prints {"delivered": ..., "longestGap": ..., "ticks": ...} as JSON.
"""

import asyncio
import json
import sys
import time
from types import TracebackType

from pydantic import SecretStr

TICK = 0.005


class LoopWatch:
    """`async with LoopWatch() as watch:` ... then `watch.longest` (seconds)."""

    def __init__(self, interval: float = TICK) -> None:
        self.interval = interval
        self.longest = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - self.interval)
            self.ticks += 1
            last = now

    async def __aenter__(self) -> "LoopWatch":
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the ticker has started before the work does
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.sleep(self.interval * 2)  # a last tick after the work
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _notify_once(url: str) -> dict[str, object]:
    from app.config import Settings
    from app.services.ops.notify import Event, Message, send

    assert "apprise" not in sys.modules
    settings = Settings()
    settings = settings.model_copy(update={"notifications": settings.notifications.model_copy(
        update={"urls": [SecretStr(url)], "timeout_seconds": 20})})
    async with LoopWatch() as watch:
        delivered = await send(settings, Message(Event.backup_succeeded, "probe", "probe"))
    return {"delivered": delivered, "longestGap": watch.longest, "ticks": watch.ticks,
            "appriseLoaded": "apprise" in sys.modules}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_notify_once(sys.argv[1]))))  # noqa: T201
