"""What health reports about restore drills (models only: the catalog's stats import it)."""

from typing import Any

from app.models.drill import DrillResult, RestoreDrill


async def drill_issues(sources: list[str] | None = None) -> dict[str, str]:
    """By source (of `sources`, when given): why its last finished drill is a problem
    (it failed, or took longer than its target)."""
    query: dict[str, Any] = {"result": {"$ne": DrillResult.running.value}}
    if sources is not None:
        query["source"] = {"$in": sources}
    last: dict[str, RestoreDrill] = {}
    for drill in await RestoreDrill.find(query).to_list():
        if drill.source not in last or drill.started_at > last[drill.source].started_at:
            last[drill.source] = drill
    issues: dict[str, str] = {}
    for name, drill in sorted(last.items()):
        if drill.result is DrillResult.failed:
            issues[name] = "the last restore drill failed: " + "; ".join(drill.failures[:3])
        elif drill.over_target and drill.rto_s is not None and drill.rto_target_s is not None:
            issues[name] = (f"the last restore drill took {drill.rto_s:g} s, over its "
                            f"RTO target of {drill.rto_target_s:g} s")
    return issues
