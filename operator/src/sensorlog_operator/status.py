"""The status subresource: conditions Ready/Synced, per-policy state, observedGeneration."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sensorlog_operator import constants as c
from sensorlog_operator import duration
from sensorlog_operator.reconcile import Observed, desired_order
from sensorlog_operator.spec import HypertableSpec


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Replace one condition; lastTransitionTime changes only when the status does."""
    value = "True" if status else "False"
    out = [dict(x) for x in conditions if x.get("type") != type_]
    old = next((x for x in conditions if x.get("type") == type_), None)
    changed = old is None or old.get("status") != value
    new: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": now() if changed else old.get("lastTransitionTime", now()),  # type: ignore[union-attr]
    }
    if generation is not None:
        new["observedGeneration"] = generation
    out.append(new)
    return sorted(out, key=lambda x: str(x["type"]))


def current_conditions(status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [dict(x) for x in (status or {}).get("conditions") or []]


def ready_for(status: Mapping[str, Any] | None, generation: int | None) -> bool:
    """Was the current generation already applied successfully?"""
    for cond in current_conditions(status):
        if cond.get("type") == c.READY:
            return bool(
                cond.get("status") == "True" and cond.get("observedGeneration") == generation
            )
    return False


def policies(spec: HypertableSpec, obs: Observed) -> list[dict[str, Any]]:
    """One entry per policy of the spec, judged from the database as it is now."""
    out: list[dict[str, Any]] = []
    if spec.retention is not None:
        job = obs.retention
        ok = job is not None and job.intervals.get("drop_after") == spec.retention.after
        out.append(
            _entry(
                c.POLICY_RETENTION,
                ok,
                job.job_id if job else None,
                f"drop chunks older than {duration.render(spec.retention.after)}"
                if ok
                else "retention policy missing or different",
            )
        )
    if spec.compression is not None:
        job = obs.compression
        ok = (
            job is not None
            and job.intervals.get("compress_after") == spec.compression.after
            and obs.compression_enabled
            and obs.segment_by == spec.compression.segment_by
            and obs.order_by == desired_order(spec, spec.compression)
        )
        out.append(
            _entry(
                c.POLICY_COMPRESSION,
                ok,
                job.job_id if job else None,
                f"compress chunks older than {duration.render(spec.compression.after)}, "
                f"segmentBy [{','.join(obs.segment_by)}], orderBy [{','.join(obs.order_by)}]"
                if ok
                else "compression policy or settings missing or different",
            )
        )
    elif obs.compression_enabled and obs.compressed_chunks:
        out.append(
            _entry(
                c.POLICY_COMPRESSION,
                False,
                None,
                f"no compression policy; {obs.compressed_chunks} chunks stay compressed, so "
                "compression settings cannot be removed (decompress_chunk them to finish)",
            )
        )
    for cagg in spec.continuous_aggregates:
        seen = obs.caggs.get(cagg.name)
        job = seen.job if seen else None
        if seen is None:
            ok, msg = False, "continuous aggregate missing"
        elif cagg.refresh is None:
            ok, msg = job is None, "no refresh policy" if job is None else "unwanted refresh policy"
        else:
            ok = (
                job is not None
                and job.intervals.get("start_offset") == cagg.refresh.start_offset
                and job.intervals.get("end_offset") == cagg.refresh.end_offset
                and job.schedule_interval == cagg.refresh.schedule_interval
            )
            msg = (
                f"refresh [-{duration.render(cagg.refresh.start_offset)}, "
                f"-{duration.render(cagg.refresh.end_offset)}] every "
                f"{duration.render(cagg.refresh.schedule_interval)}"
                if ok
                else "refresh policy missing or different"
            )
        out.append(_entry(c.CAGG_PREFIX + cagg.name, ok, job.job_id if job else None, msg))
    return out


def _entry(name: str, applied: bool, job_id: int | None, message: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "applied": applied, "message": message}
    if job_id is not None:
        entry["jobId"] = job_id
    return entry


def summary(spec: HypertableSpec) -> str:
    parts = [
        f"hypertable {spec.qualified} on {spec.time_column}",
        f"chunk {duration.render(spec.chunk_interval)}",
    ]
    if spec.retention:
        parts.append(f"retention {duration.render(spec.retention.after)}")
    if spec.compression:
        parts.append(f"compression after {duration.render(spec.compression.after)}")
    if spec.continuous_aggregates:
        parts.append(f"{len(spec.continuous_aggregates)} continuous aggregate(s)")
    return "database matches spec: " + ", ".join(parts)
