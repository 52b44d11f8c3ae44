"""The timer: re-check the database and repair what someone changed by hand."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from sensorlog_operator import constants as c
from sensorlog_operator import metrics, sync
from sensorlog_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


async def repair(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    settings: OperatorSettings = memo["settings"]
    outcome = await sync.run(body, patch, settings, trigger="drift")
    for action in outcome.actions:
        metrics.DRIFT_REPAIRS.inc()
        # A warning: someone or something changed the database behind the spec's back.
        kopf.warn(body, reason=c.EVENT_DRIFT, message=action.description)
        log.warning(
            "repaired drift", extra={"resource": sync.owner_of(body), "action": action.description}
        )
