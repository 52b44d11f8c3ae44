"""``sensorlog-operator``: kopf with our handlers, a status port (/metrics, /healthz, /readyz)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading

import kopf

from sensorlog_core.logs import setup_logging
from sensorlog_core.settings import load
from sensorlog_core.statusserver import StatusServer
from sensorlog_operator import main as handlers
from sensorlog_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


async def run(settings: OperatorSettings, stop: threading.Event | None = None) -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    ready = asyncio.Event()
    operator: asyncio.Task[None] | None = None

    def live() -> tuple[bool, str]:
        # Dead kopf task = dead operator; let the kubelet restart the pod.
        if operator is None or operator.done():
            return False, "kopf is not running"
        return True, "ok"

    def readiness() -> tuple[bool, str]:
        return (True, "ok") if ready.is_set() else (False, "kopf is starting")

    server = StatusServer(settings.metrics_host, settings.metrics_port, live, readiness)
    if settings.metrics_port:
        await server.start()
    namespaces = settings.namespace_list()
    memo = kopf.Memo(settings=settings)
    try:
        operator = asyncio.create_task(
            kopf.operator(
                registry=registry,
                clusterwide=not namespaces,
                namespaces=namespaces,
                standalone=True,
                ready_flag=ready,
                stop_flag=stop,
                memo=memo,
            )
        )
        await operator
    finally:
        await server.stop()


class _DropKopfSettings(logging.Filter):
    """kopf attaches its whole settings object to each object log record; the JSON
    line would carry it every time. The object reference (k8s_ref) stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("settings", None)
        record.__dict__.pop("k8s_skip", None)
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sensorlog-operator",
        description="Reconcile Hypertable resources into TimescaleDB policies. Configured by "
        "SENSORLOG_OPERATOR_* environment variables; Kubernetes access from the pod's "
        "ServiceAccount or KUBECONFIG.",
    )
    parser.parse_args(argv)
    settings = load(OperatorSettings)
    setup_logging(settings.log_level, settings.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropKopfSettings())
    # kopf logs every watch event at DEBUG; keep its INFO unless we debug ourselves.
    logging.getLogger("kopf").setLevel(max(logging.INFO, logging.getLogger().level))
    log.info(
        "starting",
        extra={
            "namespaces": settings.namespace_list() or "all",
            "drift_interval": settings.drift_interval,
        },
    )
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
