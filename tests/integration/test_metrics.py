"""/metrics carries the catalog's series (per source, jobs, storage, schedules), and every
metric the shipped alert rules name exists there."""

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: present, its stubs are not
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.models.backup import Backup, BackupStatus
from app.models.drill import DrillResult, RestoreDrill
from app.models.verification import BackupVerification, VerificationKind, VerificationResult
from app.services.access.auth import system_user_id
from tests.support.rebuild import backed_up, drop_catalog, own_settings, started

pytestmark = pytest.mark.usefixtures("source_databases")
ALERTS = Path(__file__).parents[2] / "docs" / "prometheus-alerts.yml"
METRIC = re.compile(r"\bbackvault_[a-z0-9_]+")


async def scrape(client: httpx.AsyncClient) -> dict[str, dict[tuple[tuple[str, str], ...],
                                                             float]]:
    """Each metric's samples by their labels."""
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return found


def one(metrics: dict[str, Any], name: str, **labels: str) -> float:
    value: float = metrics[name][tuple(sorted(labels.items()))]
    return value


async def test_catalog_metrics_and_alert_rules(app: FastAPI, settings: Settings) -> None:
    own = own_settings(settings, [])
    async with started(app, settings, own) as (client, headers):
        backup = await backed_up(client, headers, "database", {"source": "pg"})
        admin = await system_user_id()
        await Backup(admin=admin, status=BackupStatus.failed, source="mongo", kind="mongodb",
                     error="test: the server went away").insert()
        await BackupVerification(backup_id=backup["id"], source="pg",
                                 kind=VerificationKind.deep,
                                 result=VerificationResult.failed).insert()
        await RestoreDrill(source="pg", result=DrillResult.failed, rto_s=120.0,
                           rto_target_s=60.0, finished_at=backup["createdAt"]).insert()
        created = await client.post("/api/schedules", headers=headers, json={
            "name": "nightly-pg", "kind": "database", "cron": "0 3 * * *",
            "sources": ["pg"]})
        assert created.status_code == 201, created.text

        metrics = await scrape(client)
        assert one(metrics, "backvault_backup_last_size_bytes", source="pg") == \
            backup["storedBytes"]
        finished = one(metrics, "backvault_backup_last_success_timestamp_seconds", source="pg")
        assert abs(finished - time.time()) < 120
        assert one(metrics, "backvault_backup_last_duration_seconds", source="pg") == \
            pytest.approx(backup["durationMs"] / 1000)
        assert one(metrics, "backvault_backup_last_success_timestamp_seconds",
                   source="mongo") == 0
        assert one(metrics, "backvault_backup_failures_7d", source="mongo") == 1
        assert one(metrics, "backvault_backup_failures_7d", source="pg") == 0
        assert one(metrics, "backvault_verification_last_passed", source="pg") == 0
        assert one(metrics, "backvault_drill_last_passed", source="pg") == 0
        assert one(metrics, "backvault_drill_rto_seconds", source="pg") == 120
        assert one(metrics, "backvault_drill_rto_target_seconds", source="pg") == 60
        assert one(metrics, "backvault_catalog_up") == 1
        assert one(metrics, "backvault_jobs_running") == 0
        assert one(metrics, "backvault_jobs_queued") == 0
        target = own.storage.default_name
        assert one(metrics, "backvault_storage_used_bytes", target=target) == \
            backup["storedBytes"]
        assert one(metrics, "backvault_storage_free_bytes", target=target) > 0
        assert one(metrics, "backvault_spool_free_bytes") > 0
        assert one(metrics, "backvault_backup_largest_recent_bytes") == backup["storedBytes"]
        next_fire = one(metrics, "backvault_schedule_next_fire_timestamp_seconds",
                        schedule="nightly-pg", kind="database")
        assert 0 < next_fire - time.time() <= 24 * 3600
        assert "process_cpu_seconds_total" in metrics or "python_info" in metrics

        # Scrapes within the cache time read the same collection, not the catalog again.
        await Backup(admin=admin, status=BackupStatus.failed, source="mongo",
                     kind="mongodb").insert()
        again = await scrape(client)
        assert one(again, "backvault_backup_failures_7d", source="mongo") == 1

        rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
        assert {r["alert"] for r in rules} >= {
            "BackvaultBackupMissing", "BackvaultBackupFailed", "BackvaultVerificationFailed",
            "BackvaultDrillFailed", "BackvaultDrillRtoOverTarget", "BackvaultStorageLow"}
        for rule in rules:
            named = METRIC.findall(rule["expr"])
            assert named, rule
            for name in named:
                assert name in metrics, f"{rule['alert']} names {name}, not on /metrics"
            assert rule["labels"]["severity"] in ("warning", "critical")
    await drop_catalog(own)
