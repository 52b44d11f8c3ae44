"""The dashboard, docs/metrics.md and the code name the same metrics.

A renamed metric would otherwise leave an empty panel or a wrong doc row
that nobody notices until an incident.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

# Importing the modules registers their metrics in the default registry.
import sensorlog_core.consul
import sensorlog_operator.metrics
import sensorlog_query.metrics
import sensorlog_writer.metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "sensorlog" / "dashboards" / "sensorlog.json"
DOC = ROOT / "docs" / "metrics.md"
_SUFFIXES = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count", ""]}


def _code_metrics() -> dict[str, str]:
    """Scraped base name -> type, for every sensorlog metric the code defines."""
    out = {}
    for family in REGISTRY.collect():
        if family.name.startswith("sensorlog_"):
            scraped = family.name + ("_total" if family.type == "counter" else "")
            out[scraped] = family.type
    assert sensorlog_writer.metrics and sensorlog_query.metrics and sensorlog_core.consul
    assert sensorlog_operator.metrics
    return out


def _series(code: dict[str, str]) -> set[str]:
    names = set()
    for scraped, kind in code.items():
        base = scraped.removesuffix("_total")
        names |= {base + s for s in _SUFFIXES[kind]}
    return names


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_every_metric_the_dashboard_queries_exists_in_the_code() -> None:
    series = _series(_code_metrics())
    used = {m for e in _dashboard_exprs() for m in re.findall(r"\bsensorlog_[a-z_]+", e)}
    assert used, "no sensorlog metric in the dashboard"
    assert not sorted(used - series), "dashboard queries metrics the code does not define"


@pytest.mark.parametrize(
    "topic",
    [
        "sensorlog_writer_readings_written_total",  # ingest rate
        "sensorlog_writer_consumer_lag",  # lag per partition
        "sensorlog_writer_dead_lettered_total",  # DLQ rate
        "sensorlog_writer_batch_seconds_bucket",  # batch latency
        "sensorlog_query_requests_total",  # query rate and errors by method
        "sensorlog_query_request_seconds_bucket",  # query latency by method
        "sensorlog_operator_reconciles_total",  # operator reconcile results
    ],
)
def test_dashboard_shows_each_required_signal(topic: str) -> None:
    assert any(topic in e for e in _dashboard_exprs())


def test_docs_table_lists_exactly_the_metrics_in_the_code_with_their_types() -> None:
    rows = re.findall(r"^\| `(sensorlog_[a-z_]+)` \| (\w+) \|", DOC.read_text(), re.M)
    documented = dict(rows)
    assert len(documented) == len(rows), "a metric is listed twice"
    assert documented == _code_metrics()


def test_dashboard_is_valid_grafana_json_with_a_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]


def _render(*args: str) -> list[dict[str, Any]]:
    helm = ROOT / ".tools" / "bin" / "helm"
    if not helm.is_file():
        pytest.skip("helm not installed: run `make tools` (hack/tools/helm.sh)")
    chart = ROOT / "charts" / "sensorlog"
    out = subprocess.run(
        [str(helm), "template", "sensorlog", str(chart), "--namespace", "sensorlog", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_ships_the_dashboard_to_the_grafana_sidecar_only_when_asked() -> None:
    def dashboards(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"
        ]

    assert dashboards(_render()) == []
    [cm] = dashboards(
        _render(
            "--set",
            "metrics.grafanaDashboard.enabled=true",
            "--set",
            "metrics.grafanaDashboard.annotations.grafana_folder=sensorlog",
        )
    )
    assert cm["metadata"]["annotations"] == {"grafana_folder": "sensorlog"}
    assert json.loads(cm["data"]["sensorlog.json"]) == json.loads(DASHBOARD.read_text())
