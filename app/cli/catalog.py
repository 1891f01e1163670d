"""`backvault catalog ...` (the catalog itself) and `backvault doctor` (deep health)."""

import json

import typer
from rich import box
from rich.table import Table

from app.cli.common import app, out, report_job, run_job_here, run_work
from app.config import Settings
from app.models.doctor import CheckStatus, DoctorReport
from app.models.job import JobTrigger
from app.services.jobs import submit
from app.services.jobs.runner import JobRunner
from app.services.ops.doctor import run_doctor

catalog_app = typer.Typer(help="The catalog: rebuild it from storage.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
STYLE = {CheckStatus.ok: "green", CheckStatus.warning: "yellow", CheckStatus.failed: "red"}


@catalog_app.command("rebuild")
def rebuild(dry_run: bool = typer.Option(False, "--dry-run",
                                         help="report what would be recreated; write nothing")
            ) -> None:
    """Recreate missing catalog records from the manifests on every storage target."""

    async def work(_: Settings, runner: JobRunner) -> int:
        job = await submit.submit_catalog_rebuild(runner, dry_run, None, JobTrigger.cli)
        return report_job(await run_job_here(runner, job, "catalog rebuild"))

    run_work(work)


def _checks_table(report: DoctorReport) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("area", "name", "status", "ms", "detail"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        style = STYLE[check.status]
        table.add_row(check.area, check.name, f"[{style}]{check.status.value}[/{style}]",
                      "" if check.latency_ms is None else f"{check.latency_ms:g}",
                      check.detail or "")
    return table


@app.command("doctor")
def doctor(as_json: bool = typer.Option(False, "--json", help="print the report as JSON")
           ) -> None:
    """Deep health: probe storage, free space, sources, IPFS/Gaia endpoints, the catalog and
    notification URLs. Exit 0 when all are ok or warnings, 1 when a check failed."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        report = await run_doctor(settings, runner.targets)
        if as_json:
            out.print_json(json.dumps(report.model_dump(mode="json", by_alias=True)))
        else:
            out.print(_checks_table(report))
            out.print(f"overall: [{STYLE[report.status]}]{report.status.value}")
        return 1 if report.status is CheckStatus.failed else 0

    run_work(work)
