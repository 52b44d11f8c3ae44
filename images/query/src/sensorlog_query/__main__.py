"""``sensorlog-query-server``: the gRPC query service (configured by SENSORLOG_QUERY_*)."""

from __future__ import annotations

import asyncio

from sensorlog_core.logs import setup_logging
from sensorlog_core.settings import load
from sensorlog_query.server import QueryServer
from sensorlog_query.settings import QuerySettings


def main() -> None:
    settings = load(QuerySettings)
    setup_logging(settings.log_level, settings.log_format)
    asyncio.run(QueryServer(settings).run_until_signal())


if __name__ == "__main__":
    main()
