"""create/update/resume: make the database match the spec, one event per change."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from sensorlog_operator import constants as c
from sensorlog_operator import sync
from sensorlog_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


async def reconcile(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, reason: str, **_: Any
) -> None:
    settings: OperatorSettings = memo["settings"]
    outcome = await sync.run(body, patch, settings, trigger=str(reason))
    for action in outcome.actions:
        kopf.event(body, type="Normal", reason=c.EVENT_APPLIED, message=action.description)
    log.info(
        "reconciled",
        extra={
            "resource": sync.owner_of(body),
            "trigger": str(reason),
            "changes": len(outcome.actions),
        },
    )
