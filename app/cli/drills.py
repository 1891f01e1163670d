"""Restore drill commands: `drill run` (the newest good backup of a source, or of every
source, restored into a scratch database and checked; a PITR source also restored to its
latest moment) and `drill list` (drills and RTO trends)."""

import json
from typing import Annotated

import typer

from app.cli.common import app, out, report_job, run_job_here, run_work
from app.config import Settings
from app.models.job import JobTrigger
from app.services.jobs.runner import JobRunner
from app.services.recoverability.drills import list_drills, submit_drill

drill_app = typer.Typer(help="Restore drills: prove the backups restore.",
                        no_args_is_help=True)
app.add_typer(drill_app, name="drill")

Source = Annotated[str | None, typer.Option(help="one source; default: every source")]


@drill_app.command("run")
def run(source: Source = None) -> None:
    """Drill now and wait; exit 1 when a drill fails (each failure named)."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        job = await submit_drill(runner, source, None, trigger=JobTrigger.cli)
        return report_job(await run_job_here(runner, job,
                                             f"restore drill of {source or 'every source'}"))

    run_work(work)


@drill_app.command("list")
def list_(source: Source = None,
          limit: Annotated[int, typer.Option(min=1, max=500)] = 20) -> None:
    """The newest drills (JSON) and each source's RTO trend."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        found = await list_drills(settings, source, limit)
        out.print_json(json.dumps(found.model_dump(mode="json", by_alias=True)))
        return 0

    run_work(work)
