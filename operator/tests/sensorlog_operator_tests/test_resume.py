"""Operator restarts: what kopf's resume (and a create or update that was pending) does
with resources that already exist, on the real kube-apiserver and TimescaleDB.

The restarted operator runs with a drift timer that never fires during a test, so
whatever it repairs was repaired by its start-up handling, not by the timer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from sensorlog_operator_tests.conftest import NS, Cluster, Operator, eventually
from sensorlog_operator_tests.test_operator import (
    condition,
    hypertable,
    interval,
    jobs,
    make_table,
    ready,
    sql,
)

pytestmark = pytest.mark.integration

# No drift check during a test: a repair seen after a restart comes from the restart.
NO_TIMER = {"drift_interval": "3600", "drift_initial_delay": "3600"}


@pytest.fixture(scope="module")
def op(operator: Operator) -> Iterator[Operator]:
    yield operator
    # Tests after this module expect the session's settings (a 2 s drift timer).
    operator.stop()
    operator.start()


@pytest.fixture(autouse=True)
def _running(op: Operator) -> None:
    # A test that failed while the operator was down must not take the next one with it.
    if not op.alive():
        op.start(**NO_TIMER)


def cagg(table: str) -> dict[str, Any]:
    return {
        "name": f"{table}_hourly",
        "bucket": "1h",
        "groupBy": ["sensor_id"],
        "aggregations": [{"column": "temperature", "functions": ["avg"]}],
        "refresh": {"startOffset": "3d", "endOffset": "1h"},
    }


def view_comment(dsn: str, view: str) -> str | None:
    rows = sql(
        dsn,
        "SELECT obj_description(format('%I.%I', view_schema, view_name)::regclass, 'pg_class') "
        "AS comment FROM timescaledb_information.continuous_aggregates WHERE view_name = $1",
        view,
    )
    return rows[0]["comment"] if rows else None


def caggs_of(dsn: str, table: str) -> list[str]:
    rows = sql(
        dsn,
        "SELECT view_name FROM timescaledb_information.continuous_aggregates "
        "WHERE hypertable_name = $1 ORDER BY view_name",
        table,
    )
    return [r["view_name"] for r in rows]


def job_counts(dsn: str, table: str) -> dict[str, int]:
    """Jobs per kind, so that a duplicate policy shows (``jobs`` keeps one per kind)."""
    rows = sql(
        dsn,
        "SELECT proc_name, count(*) AS n FROM timescaledb_information.jobs "
        "WHERE hypertable_name = $1 GROUP BY proc_name",
        table,
    )
    return {r["proc_name"]: r["n"] for r in rows}


def chunk_interval(dsn: str, table: str) -> timedelta:
    rows = sql(
        dsn,
        "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = $1",
        table,
    )
    value: timedelta = rows[0]["time_interval"]
    return value


def event_ids(cluster: Cluster, name: str) -> set[str]:
    return {e["metadata"]["uid"] for e in cluster.events(name)}


def new_events(cluster: Cluster, name: str, before: set[str], n: int) -> list[dict[str, Any]]:
    """Events not in ``before``, once there are ``n`` (kopf posts them in the background)."""

    def posted() -> list[dict[str, Any]] | None:
        events = [e for e in cluster.events(name) if e["metadata"]["uid"] not in before]
        return events if len(events) >= n else None

    found: list[dict[str, Any]] = eventually(posted, what=f"{n} new events of {name}")
    return found


def reconciles(op: Operator, name: str) -> list[tuple[str, int]]:
    """(trigger, changes) of each change-handler run of this operator run for ``name``."""
    found = re.findall(
        rf"reconciled resource={NS}/{name} trigger=(\w+) changes=(\d+)", op.run_log()
    )
    return [(trigger, int(changes)) for trigger, changes in found]


def stop_cleanly(op: Operator) -> None:
    started = time.monotonic()
    assert op.stop() == 0, op.run_log()[-3000:]
    assert time.monotonic() - started < 15, "SIGTERM took too long"


def create_ready(cluster: Cluster, dsn: str, name: str, table: str, **spec: Any) -> dict[str, Any]:
    make_table(dsn, table, rows=50)
    cluster.apply(hypertable(name, table, **spec))
    obj: dict[str, Any] = eventually(lambda: ready(cluster, name), what=f"{name} Ready")
    return obj


def test_changes_made_by_hand_while_the_operator_was_down_are_repaired_on_resume(
    cluster: Cluster, op: Operator, dsn: str
) -> None:
    table, name = "t_resume_drift", "resume-drift"
    view = f"{table}_hourly"
    before = create_ready(
        cluster, dsn, name, table, chunkInterval="1d", retention={"after": "30d"},
        continuousAggregates=[cagg(table)],
    )  # fmt: skip
    generation = before["metadata"]["generation"]
    old_job = jobs(dsn, table)["policy_retention"]["job_id"]
    seen = event_ids(cluster, name)

    stop_cleanly(op)
    sql(dsn, f"SELECT remove_retention_policy('{table}')")
    sql(dsn, f"SELECT set_chunk_time_interval('{table}', INTERVAL '2 days')")
    sql(dsn, f"DROP MATERIALIZED VIEW {view}")
    op.start(**NO_TIMER)

    eventually(lambda: reconciles(op, name), what="the resume handler ran")
    assert reconciles(op, name) == [("resume", 4)]
    assert chunk_interval(dsn, table) == timedelta(days=1)
    retention = jobs(dsn, table)["policy_retention"]
    assert retention["job_id"] != old_job
    assert interval(dsn, retention["config"]["drop_after"]) == timedelta(days=30)
    assert caggs_of(dsn, table) == [view]
    assert view_comment(dsn, view) == f"managed by sensorlog-operator: Hypertable {NS}/{name}"
    assert job_counts(dsn, view) == {"policy_refresh_continuous_aggregate": 1}

    def repaired_status() -> dict[str, Any] | None:
        obj = ready(cluster, name)
        policies = {p["name"]: p for p in (obj or {}).get("status", {}).get("policies", [])}
        job = policies.get("retention", {}).get("jobId")
        return obj if job == retention["job_id"] else None

    obj = eventually(repaired_status, what="status with the new retention job")
    assert obj["metadata"]["generation"] == generation  # the spec did not change
    assert obj["status"]["observedGeneration"] == generation
    assert condition(obj, "Ready")["observedGeneration"] == generation
    assert all(p["applied"] for p in obj["status"]["policies"]), obj["status"]["policies"]
    assert obj["status"]["lastAppliedTime"] > before["status"]["lastAppliedTime"]
    # The change handler reports its repairs as Applied; DriftRepaired is the timer's.
    events = new_events(cluster, name, seen, 4)
    assert {(e["type"], e["reason"]) for e in events} == {("Normal", "Applied")}, events
    assert sorted(e["message"].split(" (")[0] for e in events) == [
        f"added refresh policy of {view} [-3d, -1h] every 1h",
        "added retention policy",
        f"created continuous aggregate public.{view}",
        "set chunk interval to 1d",
    ]


def test_a_spec_edited_while_the_operator_was_down_is_applied_once_on_restart(
    cluster: Cluster, op: Operator, dsn: str
) -> None:
    table, name = "t_resume_edit", "resume-edit"
    before = create_ready(
        cluster, dsn, name, table, retention={"after": "30d"}, compression={"after": "7d"}
    )
    old = jobs(dsn, table)
    seen = event_ids(cluster, name)

    stop_cleanly(op)
    cluster.kubectl(
        "patch", "hypertable", name, "-n", NS, "--type=merge",
        "-p", json.dumps({"spec": {"retention": {"after": "10d"}, "compression": {"after": "2d"}}}),
    )  # fmt: skip
    pending = cluster.get(name)
    assert pending is not None
    generation = pending["metadata"]["generation"]
    assert generation == before["metadata"]["generation"] + 1
    # Nobody claims the new generation while the operator is down.
    assert pending["status"]["observedGeneration"] == generation - 1
    assert ready(cluster, name) is None
    op.start(**NO_TIMER)

    obj = eventually(lambda: ready(cluster, name), what="Ready for the edited generation")
    assert condition(obj, "Ready")["observedGeneration"] == generation
    assert condition(obj, "Synced")["observedGeneration"] == generation
    assert "retention 10d, compression after 2d" in condition(obj, "Ready")["message"]
    now = jobs(dsn, table)
    assert interval(dsn, now["policy_retention"]["config"]["drop_after"]) == timedelta(days=10)
    assert interval(dsn, now["policy_compression"]["config"]["compress_after"]) == timedelta(days=2)
    # Changed in place, by one handler run: kopf's update and the mixed-in resume
    # call the same function once.
    assert {k: v["job_id"] for k, v in now.items()} == {k: v["job_id"] for k, v in old.items()}
    assert job_counts(dsn, table) == {"policy_retention": 1, "policy_compression": 1}
    runs = reconciles(op, name)
    assert len(runs) == 1 and runs[0][0] in ("update", "resume") and runs[0][1] == 2, runs
    events = new_events(cluster, name, seen, 2)
    said = sorted((e["reason"], e.get("count", 1), e["message"].split(" (")[0]) for e in events)
    assert said == [
        ("Applied", 1, "changed compression policy"),
        ("Applied", 1, "changed retention policy"),
    ], events


def test_resources_deleted_while_the_operator_was_down_are_finalized_on_restart(
    cluster: Cluster, op: Operator, dsn: str
) -> None:
    names = {"Retain": "resume-retain", "Delete": "resume-delete"}
    for policy, name in names.items():
        table = name.replace("-", "_").replace("resume", "t_resume")
        make_table(dsn, table, rows=50)
        cluster.apply(
            hypertable(
                name, table, reclaimPolicy=policy, retention={"after": "30d"},
                compression={"after": "7d"}, continuousAggregates=[cagg(table)],
            )
        )  # fmt: skip
    for name in names.values():
        eventually(lambda name=name: ready(cluster, name), what=f"{name} Ready")

    stop_cleanly(op)
    cluster.kubectl("delete", "hypertable", *names.values(), "-n", NS, "--wait=false")
    for name in names.values():
        obj = cluster.get(name)
        assert obj is not None, "the finalizer must hold the object while the operator is down"
        assert obj["metadata"]["deletionTimestamp"]
        assert "timescale.sensorlog.io/finalizer" in obj["metadata"]["finalizers"]
    op.start(**NO_TIMER)

    for name in names.values():
        eventually(lambda name=name: cluster.get(name) is None, what=f"{name} gone")
    # Retain: the database keeps everything; Delete: policies and the owned view go.
    assert job_counts(dsn, "t_resume_retain") == {"policy_retention": 1, "policy_compression": 1}
    assert caggs_of(dsn, "t_resume_retain") == ["t_resume_retain_hourly"]
    assert job_counts(dsn, "t_resume_delete") == {}
    assert caggs_of(dsn, "t_resume_delete") == []
    assert sql(dsn, "SELECT count(*) AS n FROM t_resume_delete")[0]["n"] == 50
    assert not sql(
        dsn,
        "SELECT 1 FROM sensorlog_operator.claims "
        "WHERE hypertable IN ('public.t_resume_retain', 'public.t_resume_delete')",
    )
    log = op.run_log()
    assert "reclaimed resource=sensors/resume-delete policy=Delete changes=3" in log
    assert "reclaimed resource=sensors/resume-retain policy=Retain changes=0" in log
    # A resource on its way out is not reconciled first (that could re-add policies).
    assert reconciles(op, "resume-delete") == [] and reconciles(op, "resume-retain") == []


def test_sigkill_while_applying_then_restart_converges_without_duplicates(
    cluster: Cluster, op: Operator, dsn: str
) -> None:
    table, name = "t_resume_kill", "resume-kill"
    view = f"{table}_hourly"
    make_table(dsn, table, rows=50)
    # The operator is killed while its view's COMMENT statement is stalled in the
    # database; the statement then fails, as if the dead client had never sent it.
    sql(
        dsn,
        "CREATE OR REPLACE FUNCTION resume_test_stall() RETURNS event_trigger "
        "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); "
        "RAISE EXCEPTION 'the operator was killed before this statement'; END $$",
    )
    sql(
        dsn,
        "CREATE EVENT TRIGGER resume_test_stall ON ddl_command_start "
        "WHEN TAG IN ('COMMENT') EXECUTE FUNCTION resume_test_stall()",
    )
    try:
        cluster.apply(
            hypertable(
                name, table, retention={"after": "30d"}, compression={"after": "7d"},
                continuousAggregates=[cagg(table)],
            )
        )  # fmt: skip
        mark = f"applying policy=cagg/{view} action=created continuous aggregate"
        eventually(lambda: mark in op.run_log(), what="the operator creating the view")
        time.sleep(0.5)  # into the stalled statement (the stall lasts 2 s)
        op.kill()
    finally:
        sql(dsn, "DROP EVENT TRIGGER IF EXISTS resume_test_stall")
        sql(dsn, "DROP FUNCTION IF EXISTS resume_test_stall()")
    killed = cluster.get(name)
    assert killed is not None and not ready(cluster, name)
    # Killed half-way: the earlier actions are done; the view went with its tags'
    # transaction, so no untagged view (which the operator would refuse) is left.
    assert job_counts(dsn, table) == {"policy_retention": 1, "policy_compression": 1}
    assert caggs_of(dsn, table) == []
    op.start(**NO_TIMER)

    obj = eventually(lambda: ready(cluster, name), what="Ready after the restart")
    assert all(p["applied"] for p in obj["status"]["policies"]), obj["status"]["policies"]
    assert job_counts(dsn, table) == {"policy_retention": 1, "policy_compression": 1}
    assert caggs_of(dsn, table) == [view]
    assert job_counts(dsn, view) == {"policy_refresh_continuous_aggregate": 1}
    assert view_comment(dsn, view) == f"managed by sensorlog-operator: Hypertable {NS}/{name}"
    tags = sql(
        dsn,
        "SELECT col_description(format('public.%I', $1::text)::regclass, 1) AS tag",
        view,
    )
    assert tags == [{"tag": "sensorlog:bucket"}]
    assert reconciles(op, name) == [("create", 2)]
