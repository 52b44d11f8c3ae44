"""The operator end to end: real kube-apiserver (CRD schema, CEL, RBAC), real TimescaleDB,
the operator as its own process with the chart's ServiceAccount and ClusterRole."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from sensorlog_operator_tests.conftest import (
    DRIFT_INTERVAL,
    NS,
    OPERATOR_NS,
    SERVICE_ACCOUNT,
    Cluster,
    Operator,
    TcpProxy,
    chart_operator_rbac,
    eventually,
)

pytestmark = pytest.mark.integration

GROUP = "timescale.sensorlog.io"


def sql(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def make_table(dsn: str, table: str, rows: int = 200) -> None:
    sql(dsn, "CREATE EXTENSION IF NOT EXISTS timescaledb")
    sql(dsn, f"DROP TABLE IF EXISTS {table} CASCADE")
    sql(
        dsn,
        f"CREATE TABLE {table} (ts timestamptz NOT NULL, sensor_id bigint NOT NULL, "
        "temperature double precision)",
    )
    sql(
        dsn,
        f"INSERT INTO {table} SELECT now() - i * interval '1 hour', i % 5, i "
        f"FROM generate_series(1, {rows}) i",
    )


def hypertable(name: str, table: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "Hypertable",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"table": table, "timeColumn": "ts", "dsnSecretRef": {"name": "db"}, **spec},
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def ready(cluster: Cluster, name: str) -> dict[str, Any] | None:
    obj = cluster.get(name)
    cond = condition(obj, "Ready")
    current = (
        obj and obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
    )
    return obj if current and cond.get("status") == "True" else None


def cannot_apply(cluster: Cluster, name: str) -> dict[str, Any]:
    cond = condition(cluster.get(name), "Ready")
    return cond if cond.get("reason") == "CannotApply" else {}


def jobs(dsn: str, table: str) -> dict[str, dict[str, Any]]:
    rows = sql(
        dsn,
        "SELECT job_id, proc_name, config::text AS config FROM timescaledb_information.jobs "
        "WHERE hypertable_name = $1",
        table,
    )
    return {r["proc_name"]: {**r, "config": json.loads(r["config"])} for r in rows}


def interval(dsn: str, text: str) -> timedelta:
    value: timedelta = sql(dsn, "SELECT $1::text::interval AS i", text)[0]["i"]
    return value


# --------------------------------------------------------------------------- API server rules


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"retention": {"after": "30 days"}}, "spec.retention.after"),
        ({"chunkInterval": "1mo"}, "spec.chunkInterval"),
        ({"reclaimPolicy": "Keep"}, "spec.reclaimPolicy"),
        ({"compression": {"segmentBy": ["sensor_id"]}}, "spec.compression.after"),
        (
            {
                "continuousAggregates": [
                    {
                        "name": "x",
                        "bucket": "1h",
                        "aggregations": [{"column": "t", "functions": ["median"]}],
                    }
                ]
            },
            "functions",
        ),
        ({"table": "Robert'); DROP TABLE x;--"}, "spec.table"),
    ],
    ids=["duration", "month", "enum", "required", "function", "identifier"],
)
def test_invalid_resources_are_rejected_by_the_api_server(
    cluster: Cluster, spec: dict[str, Any], message: str
) -> None:
    doc = hypertable("invalid", "t_invalid")
    doc["spec"].update(spec)
    r = cluster.apply(doc, check=False)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert cluster.get("invalid") is None


def test_table_and_time_column_are_immutable_and_defaults_filled(
    cluster: Cluster, operator: Operator, dsn: str
) -> None:
    cluster.apply(hypertable("immutable", "t_absent"))
    obj = cluster.get("immutable")
    assert obj is not None
    assert obj["spec"]["reclaimPolicy"] == "Retain"
    assert obj["spec"]["chunkInterval"] == "7d"
    assert obj["spec"]["dsnSecretRef"]["key"] == "dsn"
    for patch, field in [({"table": "other"}, "table"), ({"timeColumn": "t2"}, "timeColumn")]:
        r = cluster.kubectl(
            "patch", "hypertable", "immutable", "-n", NS, "--type=merge",
            "-p", json.dumps({"spec": patch}), check=False,
        )  # fmt: skip
        assert r.returncode != 0 and f"{field} is immutable" in r.stderr, r.stderr
    # Specs that cannot work are permanent errors with a message saying what to do.
    # The session's database starts without the extension (nothing created it yet).
    if not sql(dsn, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
        cond = eventually(lambda: cannot_apply(cluster, "immutable"), what="Ready=False")
        assert cond["status"] == "False"
        assert "CREATE EXTENSION timescaledb" in cond["message"]
        sql(dsn, "CREATE EXTENSION timescaledb")
    # Fixed by hand: the drift timer notices and reports the next problem, the table.
    cond = eventually(
        lambda: (
            "does not exist" in cannot_apply(cluster, "immutable").get("message", "")
            and cannot_apply(cluster, "immutable")
        ),
        what="table-absent message",
    )
    assert "table public.t_absent does not exist: create it" in cond["message"]
    assert condition(cluster.get("immutable"), "Synced")["status"] == "False"
    cluster.kubectl("delete", "hypertable", "immutable", "-n", NS, "--timeout=60s")


# --------------------------------------------------------------------------- reconciliation


SPEC = {
    "chunkInterval": "1d",
    "retention": {"after": "30d"},
    "compression": {"after": "7d", "segmentBy": ["sensor_id"], "orderBy": ["ts DESC"]},
    "continuousAggregates": [
        {
            "name": "t_main_hourly",
            "bucket": "1h",
            "groupBy": ["sensor_id"],
            "aggregations": [{"column": "temperature", "functions": ["avg", "max"]}],
            "refresh": {"startOffset": "3d", "endOffset": "1h", "scheduleInterval": "30m"},
        }
    ],
}


def test_apply_creates_hypertable_chunk_interval_and_every_policy(
    cluster: Cluster, operator: Operator, dsn: str
) -> None:
    make_table(dsn, "t_main", rows=200)
    cluster.apply(hypertable("main", "t_main", **SPEC))
    obj = eventually(lambda: ready(cluster, "main"), what="Ready=True")

    assert sql(dsn, "SELECT count(*) AS n FROM t_main")[0]["n"] == 200  # rows migrated
    dims = sql(
        dsn,
        "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_name = 't_main'",
    )
    assert dims == [{"column_name": "ts", "time_interval": timedelta(days=1)}]
    have = jobs(dsn, "t_main")
    assert interval(dsn, have["policy_retention"]["config"]["drop_after"]) == timedelta(days=30)
    assert interval(dsn, have["policy_compression"]["config"]["compress_after"]) == timedelta(
        days=7
    )
    settings = sql(
        dsn,
        "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings "
        "WHERE hypertable = 't_main'::regclass",
    )
    assert settings == [{"segmentby": "sensor_id", "orderby": "ts DESC"}]
    caggs = sql(
        dsn,
        "SELECT view_name FROM timescaledb_information.continuous_aggregates "
        "WHERE hypertable_name = 't_main'",
    )
    assert caggs == [{"view_name": "t_main_hourly"}]
    refresh = jobs(dsn, "t_main_hourly")["policy_refresh_continuous_aggregate"]
    assert interval(dsn, refresh["config"]["start_offset"]) == timedelta(days=3)

    status = obj["status"]
    assert condition(obj, "Synced")["status"] == "True"
    assert status["lastAppliedTime"] and status["chunkInterval"] == "1d"
    by_name = {p["name"]: p for p in status["policies"]}
    assert by_name["retention"] == {
        "name": "retention",
        "applied": True,
        "jobId": have["policy_retention"]["job_id"],
        "message": "drop chunks older than 30d",
    }
    assert by_name["compression"]["jobId"] == have["policy_compression"]["job_id"]
    assert by_name["cagg/t_main_hourly"]["jobId"] == refresh["job_id"]
    assert all(p["applied"] for p in status["policies"])

    reasons = [e["reason"] for e in cluster.events("main")]
    assert reasons.count("Applied") >= 5, reasons
    printed = cluster.kubectl("get", "hypertable", "main", "-n", NS).stdout
    assert printed.split("\n")[0].split()[:5] == ["NAME", "READY", "TABLE", "RETENTION", "AGE"]
    assert printed.split("\n")[1].split()[:4] == ["main", "True", "t_main", "30d"]


def test_edits_are_followed_and_removed_policies_removed(
    cluster: Cluster, operator: Operator, dsn: str
) -> None:
    before = jobs(dsn, "t_main")
    cluster.kubectl(
        "patch", "hypertable", "main", "-n", NS, "--type=merge", "-p",
        json.dumps({"spec": {"retention": {"after": "10d"},
                             "compression": {"after": "2d", "segmentBy": []}}}),
    )  # fmt: skip
    eventually(lambda: ready(cluster, "main"), what="Ready=True for the new generation")
    after = jobs(dsn, "t_main")
    assert interval(dsn, after["policy_retention"]["config"]["drop_after"]) == timedelta(days=10)
    assert interval(dsn, after["policy_compression"]["config"]["compress_after"]) == timedelta(
        days=2
    )
    # Altered in place: the same jobs, not new ones.
    assert after["policy_retention"]["job_id"] == before["policy_retention"]["job_id"]
    segment = sql(
        dsn,
        "SELECT segmentby FROM timescaledb_information.hypertable_compression_settings "
        "WHERE hypertable = 't_main'::regclass",
    )
    assert len(segment) == 1 and not segment[0]["segmentby"]  # no segmentby column left

    cluster.kubectl(
        "patch", "hypertable", "main", "-n", NS, "--type=json", "-p",
        json.dumps([{"op": "remove", "path": "/spec/retention"},
                    {"op": "remove", "path": "/spec/continuousAggregates"}]),
    )  # fmt: skip
    obj = eventually(lambda: ready(cluster, "main"), what="Ready=True after removal")
    assert "policy_retention" not in jobs(dsn, "t_main")
    assert "policy_compression" in jobs(dsn, "t_main")
    assert not sql(
        dsn,
        "SELECT 1 FROM timescaledb_information.continuous_aggregates "
        "WHERE view_name = 't_main_hourly'",
    )
    assert [p["name"] for p in obj["status"]["policies"]] == ["compression"]


def test_drift_timer_restores_a_policy_removed_by_hand(
    cluster: Cluster, operator: Operator, dsn: str
) -> None:
    old = jobs(dsn, "t_main")["policy_compression"]["job_id"]
    sql(dsn, "SELECT remove_compression_policy('t_main')")
    assert "policy_compression" not in jobs(dsn, "t_main")
    restored = eventually(
        lambda: jobs(dsn, "t_main").get("policy_compression"),
        timeout=DRIFT_INTERVAL * 10,
        what="compression policy restored",
    )
    assert restored["job_id"] != old
    assert interval(dsn, restored["config"]["compress_after"]) == timedelta(days=2)
    drift = eventually(
        lambda: [e for e in cluster.events("main") if e["reason"] == "DriftRepaired"],
        what="DriftRepaired event",
    )
    assert drift[0]["type"] == "Warning"
    assert "added compression policy" in drift[0]["message"]
    eventually(
        lambda: next(
            p["jobId"] == restored["job_id"]
            for p in cluster.get("main")["status"]["policies"]  # type: ignore[index]
            if p["name"] == "compression"
        ),
        what="status shows the new job id",
    )


def test_a_second_resource_for_the_same_table_is_refused(
    cluster: Cluster, operator: Operator, dsn: str
) -> None:
    cluster.apply(hypertable("intruder", "t_main", retention={"after": "1d"}))
    cond = eventually(
        lambda: (
            condition(cluster.get("intruder"), "Ready").get("reason") == "TableClaimed"
            and condition(cluster.get("intruder"), "Ready")
        ),
        what="Ready=False TableClaimed",
    )
    assert cond["status"] == "False"
    assert "already managed by Hypertable sensors/main" in cond["message"]
    assert "policy_retention" not in jobs(dsn, "t_main")  # the intruder changed nothing
    cluster.kubectl("delete", "hypertable", "intruder", "-n", NS, "--timeout=60s")
    # Deleting the intruder did not release main's claim: main keeps reconciling.
    assert ready(cluster, "main")


def test_database_unreachable_sets_synced_false_then_recovers(
    cluster: Cluster, operator: Operator, dsn: str, db_proxy: TcpProxy
) -> None:
    db_proxy.stop()
    try:
        cond = eventually(
            lambda: (
                condition(cluster.get("main"), "Synced").get("status") == "False"
                and condition(cluster.get("main"), "Synced")
            ),
            timeout=DRIFT_INTERVAL * 15,
            what="Synced=False",
        )
        assert cond["reason"] == "DatabaseUnavailable"
        assert "cannot reach the database" in cond["message"]
        # The database still has what was applied: Ready stays for this generation.
        assert condition(cluster.get("main"), "Ready")["status"] == "True"
    finally:
        db_proxy.start()
    eventually(
        lambda: condition(cluster.get("main"), "Synced").get("status") == "True",
        timeout=60,
        what="Synced=True again",
    )


def test_delete_with_retain_and_with_delete(cluster: Cluster, operator: Operator, dsn: str) -> None:
    spec = {
        "retention": {"after": "30d"},
        "compression": {"after": "7d"},
        "continuousAggregates": [
            {
                "name": "{t}_daily",
                "bucket": "1d",
                "aggregations": [{"column": "temperature", "functions": ["avg"]}],
                "refresh": {"startOffset": "7d", "endOffset": "1d"},
            }
        ],
    }
    for policy in ("Retain", "Delete"):
        table = f"t_{policy.lower()}"
        make_table(dsn, table, rows=50)
        s = json.loads(json.dumps(spec).replace("{t}", table))
        cluster.apply(hypertable(table.replace("_", "-"), table, reclaimPolicy=policy, **s))
    for policy in ("Retain", "Delete"):
        name = f"t-{policy.lower()}"
        obj = eventually(lambda name=name: ready(cluster, name), what=f"{name} Ready")  # type: ignore[misc]
        assert f"{GROUP}/finalizer" in obj["metadata"]["finalizers"]
        cluster.kubectl("delete", "hypertable", name, "-n", NS, "--timeout=60s")
        assert cluster.get(name) is None  # the finalizer was released

    kept = jobs(dsn, "t_retain")
    assert {"policy_retention", "policy_compression"} <= set(kept)
    assert jobs(dsn, "t_retain_daily")  # aggregate and its refresh policy stay

    assert jobs(dsn, "t_delete") == {}
    assert not sql(
        dsn,
        "SELECT 1 FROM timescaledb_information.continuous_aggregates "
        "WHERE view_name = 't_delete_daily'",
    )
    # The table and its rows always stay.
    assert sql(dsn, "SELECT count(*) AS n FROM t_delete")[0]["n"] == 50
    assert not sql(
        dsn,
        "SELECT 1 FROM sensorlog_operator.claims "
        "WHERE hypertable IN ('public.t_retain', 'public.t_delete')",
    )


# --------------------------------------------------------------------------- identity


def _can_i(cluster: Cluster, verb: str, resource: str, ns: str = NS) -> bool:
    who = f"system:serviceaccount:{OPERATOR_NS}:{SERVICE_ACCOUNT}"
    r = cluster.kubectl("auth", "can-i", verb, resource, "-n", ns, f"--as={who}", check=False)
    return r.stdout.strip() == "yes"


@pytest.mark.parametrize(
    "verb, resource",
    [
        ("list", f"hypertables.{GROUP}"),
        ("watch", f"hypertables.{GROUP}"),
        ("patch", f"hypertables.{GROUP}"),
        ("patch", f"hypertables.{GROUP}/status"),
        ("get", "secrets"),
        ("create", "events"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ],
)
def test_operator_identity_can_do_what_it_needs(cluster: Cluster, verb: str, resource: str) -> None:
    assert _can_i(cluster, verb, resource)


@pytest.mark.parametrize(
    "verb, resource",
    [
        ("create", f"hypertables.{GROUP}"),
        ("delete", f"hypertables.{GROUP}"),
        ("update", f"hypertables.{GROUP}"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "secrets"),
        ("patch", "secrets"),
        ("get", "configmaps"),
        ("create", "pods"),
        ("list", "namespaces"),
        ("delete", "events"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("create", "serviceaccounts/token"),
        ("*", "*"),
    ],
)
def test_operator_identity_cannot_do_more(cluster: Cluster, verb: str, resource: str) -> None:
    assert not _can_i(cluster, verb, resource)


def _rules(cluster: Cluster, who: str) -> set[tuple[str, str, str]]:
    # What `kubectl auth can-i --list` asks, as JSON: a SelfSubjectRulesReview.
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": NS},
    }
    out = cluster.kubectl(
        "create",
        "--validate=false",
        f"--as={who}",
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps(review),
    )
    return {
        (g, r, v)
        for rule in json.loads(out.stdout)["status"]["resourceRules"]
        for g in rule.get("apiGroups") or [""]
        for r in rule.get("resources") or []
        for v in rule["verbs"]
    }


def test_everything_the_identity_may_do_comes_from_the_cluster_role(cluster: Cluster) -> None:
    """Each rule the ServiceAccount has is one of the chart's ClusterRole, or one that
    Kubernetes gives every ServiceAccount (measured on a ServiceAccount with no binding)."""
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", OPERATOR_NS, check=False)
    baseline = _rules(cluster, f"system:serviceaccount:{OPERATOR_NS}:nobody")
    have = _rules(cluster, f"system:serviceaccount:{OPERATOR_NS}:{SERVICE_ACCOUNT}")
    role = next(d for d in chart_operator_rbac() if d["kind"] == "ClusterRole")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
        for v in rule["verbs"]
    }  # fmt: skip
    assert granted <= have, f"missing: {granted - have}"
    assert have - baseline - granted == set(), "granted beyond the ClusterRole"


def test_operator_ran_without_forbidden_requests_and_serves_health_and_metrics(
    operator: Operator,
) -> None:
    assert operator.http("/healthz")[0] == 200
    code, body = operator.http("/metrics")
    assert code == 200
    assert 'sensorlog_operator_reconciles_total{result="applied",trigger="create"}' in body
    assert "sensorlog_operator_drift_repairs_total" in body
    log = operator.log()
    assert "Forbidden" not in log and "Not enough permissions" not in log, log[-3000:]
