"""Prometheus gauges of PITR (on /metrics with the rest of the default registry)."""

from prometheus_client import Gauge

SLOT_LAG = Gauge("backvault_pitr_slot_lag_bytes",
                 "WAL a source's replication slot holds back on the primary", ["source"])
WINDOW_EARLIEST = Gauge("backvault_pitr_window_earliest_timestamp_seconds",
                        "Earliest restorable time of a source (0: none)", ["source"])
WINDOW_LATEST = Gauge("backvault_pitr_window_latest_timestamp_seconds",
                      "Latest restorable time of a source (0: none)", ["source"])
WAL_GAPS = Gauge("backvault_pitr_wal_gaps", "Gaps in a source's archived WAL", ["source"])
