"""pytest fixture: one real Consul agent (dev mode) for the session.

Tests share it, so each uses its own service names and KV prefixes.
Skips, naming the build script, when the agent has not been built.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sensorlog_stack.consul import BINARY, Consul


@pytest.fixture(scope="session")
def consul_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consul]:
    if not BINARY.is_file():
        pytest.skip(f"{BINARY} not built: run hack/tools/consul.sh (Go build of Consul v1.15.4)")
    agent = Consul(tmp_path_factory.mktemp("consul")).start()
    try:
        yield agent
    finally:
        agent.stop()
