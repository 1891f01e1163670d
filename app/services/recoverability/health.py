"""What health reports about restore drills (models only: the catalog's stats import it).

A source can have drills of two modes (a dump restored into a scratch database, a PITR
restore to the latest time): its last drill is the worst of the newest of each mode, so a
passing drill of one mode never hides a failed one of the other."""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from app.models.drill import DrillResult, RestoreDrill


def _badness(drill: RestoreDrill) -> tuple[bool, bool, datetime]:
    return drill.result is DrillResult.failed, drill.over_target, drill.started_at


def last_drills(drills: Iterable[RestoreDrill]) -> dict[str, RestoreDrill]:
    """By source: the worst (failed, then over its RTO target, then the newer) of its
    newest finished drill of each mode that its newest drill job ran. A job drills every
    mode that applies to a source, so a mode missing from it no longer applies (the
    source left pitr.sources, or lost its dumps) and its old result no longer counts."""
    finished = sorted((d for d in drills if d.result is not DrillResult.running),
                      key=lambda d: d.started_at)
    newest_job = {d.source: d.job_id for d in finished}
    newest: dict[tuple[str, str], RestoreDrill] = {}
    for drill in finished:
        if drill.job_id == newest_job[drill.source]:
            newest[(drill.source, drill.mode)] = drill
    last: dict[str, RestoreDrill] = {}
    for drill in newest.values():
        kept = last.get(drill.source)
        if kept is None or _badness(drill) > _badness(kept):
            last[drill.source] = drill
    return last


async def last_drill(source: str) -> RestoreDrill | None:
    """The drill that stands for a source's drills (see last_drills)."""
    found = await RestoreDrill.find(
        {"source": source, "result": {"$ne": DrillResult.running.value}}).to_list()
    return last_drills(found).get(source)


async def drill_issues(sources: list[str] | None = None) -> dict[str, str]:
    """By source (of `sources`, when given): why its last finished drill is a problem
    (it failed, or took longer than its target)."""
    query: dict[str, Any] = {"result": {"$ne": DrillResult.running.value}}
    if sources is not None:
        query["source"] = {"$in": sources}
    last = last_drills(await RestoreDrill.find(query).to_list())
    issues: dict[str, str] = {}
    for name, drill in sorted(last.items()):
        what = "PITR drill" if drill.mode == "pitr" else "restore drill"
        if drill.result is DrillResult.failed:
            issues[name] = f"the last {what} failed: " + "; ".join(drill.failures[:3])
        elif drill.over_target and drill.rto_s is not None and drill.rto_target_s is not None:
            issues[name] = (f"the last {what} took {drill.rto_s:g} s, over its "
                            f"RTO target of {drill.rto_target_s:g} s")
    return issues
