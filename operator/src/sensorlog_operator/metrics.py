"""Prometheus metrics of the operator (served on the status port's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "sensorlog_operator_reconciles_total",
    "Reconcile attempts by trigger (change, drift, delete) and result.",
    ["trigger", "result"],
)
ACTIONS = Counter(
    "sensorlog_operator_actions_total",
    "Changes made to databases, by policy (hypertable, retention, compression, cagg).",
    ["policy"],
)
DRIFT_REPAIRS = Counter(
    "sensorlog_operator_drift_repairs_total",
    "Changes made by the drift timer because the database no longer matched the spec.",
)
RECONCILE_SECONDS = Histogram(
    "sensorlog_operator_reconcile_seconds",
    "Time to read Secret, observe, plan and apply one resource.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
