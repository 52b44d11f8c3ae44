"""One reconcile of one resource: Secret -> database -> observe -> plan -> apply -> status.

Shared by the change handlers and the drift timer; errors become kopf's
TemporaryError (retry later, Synced=False) or PermanentError (Ready=False, a
message saying what to fix).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import asyncpg
import kopf

from sensorlog_operator import constants as c
from sensorlog_operator import duration, kube, metrics, reconcile, status, timescale
from sensorlog_operator.reconcile import Action, ImpossibleSpec
from sensorlog_operator.settings import OperatorSettings
from sensorlog_operator.spec import HypertableSpec, SpecError, parse_spec

log = logging.getLogger(__name__)

# The change handlers and the timer of one resource must not interleave their SQL.
_LOCKS: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


def owner_of(body: Mapping[str, Any]) -> str:
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


class Outcome:
    """What a reconcile did, for the handler to turn into events."""

    def __init__(self, spec: HypertableSpec, actions: list[Action]) -> None:
        self.spec, self.actions = spec, actions


def _fail(
    patch: kopf.Patch,
    body: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    permanent: bool,
) -> None:
    generation = body["metadata"].get("generation")
    conds = status.current_conditions(body.get("status"))
    conds = status.set_condition(conds, c.SYNCED, False, reason, message, generation)
    if permanent or not status.ready_for(body.get("status"), generation):
        conds = status.set_condition(conds, c.READY, False, reason, message, generation)
    patch.status["conditions"] = conds
    patch.status["observedGeneration"] = generation


async def _dsn(spec: HypertableSpec, namespace: str) -> str:
    ref = spec.dsn_secret_ref
    return await kube.read_secret_key(namespace, ref.name, ref.key)


async def _close(conn: asyncpg.Connection) -> None:
    # A dead server never answers Terminate: do not let close() hang the handler.
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:
        conn.terminate()


async def run(
    body: Mapping[str, Any],
    patch: kopf.Patch,
    settings: OperatorSettings,
    trigger: str,
) -> Outcome:
    namespace = body["metadata"]["namespace"]
    owner = owner_of(body)
    generation = body["metadata"].get("generation")
    started = time.monotonic()
    result = "error"
    try:
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as exc:
            result = "permanent"
            _fail(patch, body, reason=c.REASON_INVALID_SPEC, message=str(exc), permanent=True)
            raise kopf.PermanentError(str(exc)) from None
        async with _LOCKS[owner]:
            try:
                dsn = await _dsn(spec, namespace)
                conn = await timescale.connect(dsn, settings.db_connect_timeout)
            except kube.SecretUnavailable as exc:
                result = "transient"
                reason = c.REASON_SECRET_UNAVAILABLE
                _fail(patch, body, reason=reason, message=str(exc), permanent=False)
                raise kopf.TemporaryError(str(exc), delay=settings.retry_delay) from None
            except timescale.TransientDatabaseError as exc:
                result = "transient"
                message = f"cannot reach the database: {exc}"
                _fail(patch, body, reason=c.REASON_DB_UNAVAILABLE, message=message, permanent=False)
                raise kopf.TemporaryError(message, delay=settings.retry_delay) from None
            try:
                actions, observed = await _converge(conn, spec, owner)
            except ImpossibleSpec as exc:
                result = "permanent"
                _fail(patch, body, reason=c.REASON_CANNOT_APPLY, message=str(exc), permanent=True)
                raise kopf.PermanentError(str(exc)) from None
            except TableClaimed as exc:
                result = "permanent"
                _fail(patch, body, reason=c.REASON_TABLE_CLAIMED, message=str(exc), permanent=True)
                raise kopf.PermanentError(str(exc)) from None
            except Exception as exc:
                if timescale.is_transient(exc):
                    result = "transient"
                    message = f"database error, retrying: {type(exc).__name__}: {exc}"
                    reason = c.REASON_DB_UNAVAILABLE
                    _fail(patch, body, reason=reason, message=message, permanent=False)
                    raise kopf.TemporaryError(message, delay=settings.retry_delay) from None
                if isinstance(exc, asyncpg.PostgresError):
                    result = "permanent"
                    message = f"the database rejected the spec: {type(exc).__name__}: {exc}"
                    _fail(patch, body, reason=c.REASON_DB_REJECTED, message=message, permanent=True)
                    raise kopf.PermanentError(message) from None
                raise
            finally:
                await _close(conn)
        summary = status.summary(spec)
        conds = status.current_conditions(body.get("status"))
        for kind in (c.READY, c.SYNCED):
            conds = status.set_condition(
                conds, kind, True, c.REASON_RECONCILED, summary, generation
            )
        patch.status["conditions"] = conds
        patch.status["observedGeneration"] = generation
        patch.status["policies"] = status.policies(spec, observed)
        if observed.chunk_interval is not None:
            patch.status["chunkInterval"] = duration.render(observed.chunk_interval)
        if actions or not (body.get("status") or {}).get("lastAppliedTime"):
            patch.status["lastAppliedTime"] = status.now()
        result = "applied" if actions else "unchanged"
        for action in actions:
            metrics.ACTIONS.labels(action.policy.split("/")[0]).inc()
        return Outcome(spec, actions)
    finally:
        metrics.RECONCILES.labels(trigger, result).inc()
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


class TableClaimed(Exception):
    pass


async def _converge(
    conn: asyncpg.Connection, spec: HypertableSpec, owner: str
) -> tuple[list[Action], reconcile.Observed]:
    observed = await timescale.observe(conn, spec)
    reconcile.check(spec, observed, owner)
    holder = await timescale.claim(conn, spec, owner)
    if holder != owner:
        raise TableClaimed(
            f"table {spec.qualified} is already managed by Hypertable {holder}: delete one of "
            f"the two resources (if {holder} no longer exists, run DELETE FROM "
            f"{c.CLAIMS_SCHEMA}.{c.CLAIMS_TABLE} WHERE hypertable = '{spec.qualified}')"
        )
    actions = reconcile.plan(spec, observed, owner)
    done = await timescale.apply(conn, actions)
    if done:
        observed = await timescale.observe(conn, spec)
    return done, observed


async def reclaim(body: Mapping[str, Any], settings: OperatorSettings) -> list[Action]:
    """On deletion: Delete removes policies and owned aggregates; both release the claim."""
    owner = owner_of(body)
    spec = parse_spec(body.get("spec") or {})
    dsn = await _dsn(spec, body["metadata"]["namespace"])
    async with _LOCKS[owner]:
        conn = await timescale.connect(dsn, settings.db_connect_timeout)
        try:
            done: list[Action] = []
            if spec.reclaim_policy == c.DELETE:
                observed = await timescale.observe(conn, spec)
                done = await timescale.apply(conn, reconcile.reclaim_plan(spec, observed, owner))
            await timescale.release(conn, spec, owner)
            return done
        finally:
            await _close(conn)
            with contextlib.suppress(KeyError):
                del _LOCKS[owner]
