"""Handler registration only; the work lives in ``handlers/*``.

A function instead of module-level decorators: the timer's interval comes from
the settings, which exist only once ``__main__`` has loaded them.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from sensorlog_operator import constants as c
from sensorlog_operator import kube
from sensorlog_operator.handlers import change, delete, drift
from sensorlog_operator.settings import OperatorSettings

RESOURCE = (c.GROUP, c.VERSION, c.PLURAL)


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's bookkeeping in annotations of our group: the status stays exactly the
    # structural one of the CRD, and no kopf peering objects are needed (one replica,
    # Recreate strategy).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=c.ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = c.FINALIZER
    settings.peering.standalone = True
    # On deletion kopf stops the drift timer, then re-checks whether it has exited
    # before releasing the finalizer; its default of 60 s would hold every delete.
    settings.background.cancellation_polling = 2
    # Our own events (kopf.event, unfiltered) say what changed; kopf's per-handler INFO
    # log events would only repeat them.
    settings.posting.level = logging.WARNING


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    kopf.on.startup(registry=registry)(configure)
    kopf.on.login(registry=registry)(kube.CREDENTIALS.login)
    for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on(*RESOURCE, registry=registry)(change.reconcile)
    kopf.timer(
        *RESOURCE,
        registry=registry,
        id="drift",
        interval=settings.drift_interval,
        initial_delay=settings.drift_initial_delay,
    )(drift.repair)
    kopf.on.delete(*RESOURCE, registry=registry, retries=settings.delete_retries)(delete.reclaim)
