"""Deletion (behind kopf's finalizer): honour spec.reclaimPolicy."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from sensorlog_operator import constants as c
from sensorlog_operator import kube, metrics, sync, timescale
from sensorlog_operator.settings import OperatorSettings
from sensorlog_operator.spec import SpecError

log = logging.getLogger(__name__)


async def reclaim(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    settings: OperatorSettings = memo["settings"]
    policy = (body.get("spec") or {}).get("reclaimPolicy", c.RETAIN)
    try:
        done = await sync.reclaim(body, settings)
    except SpecError as exc:
        log.warning("spec unreadable at deletion; nothing reclaimed", extra={"error": str(exc)})
        metrics.RECONCILES.labels("delete", "permanent").inc()
        return
    except (kube.SecretUnavailable, timescale.TransientDatabaseError, OSError) as exc:
        metrics.RECONCILES.labels("delete", "transient").inc()
        if policy == c.RETAIN:
            # Retain promises not to touch the database: only the table's claim is
            # left behind, and the message of a future claimant says how to clear it.
            kopf.warn(
                body,
                reason=c.EVENT_RECLAIMED,
                message=f"retained; could not release the table's claim: {exc}",
            )
            return
        if retry + 1 >= settings.delete_retries:
            kopf.warn(
                body,
                reason=c.EVENT_FAILED,
                message=f"gave up removing policies after {retry + 1} attempts ({exc}); "
                "the database keeps them, remove them by hand",
            )
            raise kopf.PermanentError(str(exc)) from None
        raise kopf.TemporaryError(str(exc), delay=settings.retry_delay) from None
    metrics.RECONCILES.labels("delete", "applied" if done else "unchanged").inc()
    for action in done:
        kopf.event(body, type="Normal", reason=c.EVENT_RECLAIMED, message=action.description)
    log.info(
        "reclaimed",
        extra={"resource": sync.owner_of(body), "policy": policy, "changes": len(done)},
    )
