"""``sensorlog-query-server``: the gRPC query service (configured by SENSORLOG_QUERY_*)."""

from __future__ import annotations

import logging

import uvloop

from sensorlog_core import consul
from sensorlog_core.logs import setup_logging
from sensorlog_core.settings import load
from sensorlog_core.tracing import setup_tracing
from sensorlog_query.server import PROGRAM, QueryServer
from sensorlog_query.settings import QuerySettings


async def serve(settings: QuerySettings) -> None:
    remote = None
    if settings.consul_enabled and settings.consul_kv_config:
        remote = consul.RemoteConfig(
            consul.client_for(settings),
            QuerySettings,
            consul.default_prefix(settings, settings.consul_service_name or PROGRAM),
            settings,
            retry_max_s=settings.consul_retry_max_s,
        )
        settings = await remote.initial()
        logging.getLogger().setLevel(settings.log_level)
    server = QueryServer(settings)
    if remote is not None:
        remote.start(server.apply_settings)
    try:
        await server.run_until_signal()
    finally:
        if remote is not None:
            await remote.stop()


def main() -> None:
    settings = load(QuerySettings)
    setup_logging(settings.log_level, settings.log_format)
    tracing = setup_tracing(settings, PROGRAM, PROGRAM)
    try:
        uvloop.run(serve(settings))
    finally:
        if tracing is not None:
            tracing.shutdown()


if __name__ == "__main__":
    main()
