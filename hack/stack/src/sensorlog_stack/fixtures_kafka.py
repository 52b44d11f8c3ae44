"""pytest fixture: one real Kafka broker for the whole test session.

Use it with ``pytest_plugins = ("sensorlog_stack.fixtures_kafka",)`` in a test
module or the root conftest. Tests share the broker, so each should use its own
topic and group names (e.g. with a uuid suffix).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sensorlog_stack.kafka import Kafka


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    broker = Kafka(tmp_path_factory.mktemp("kafka")).start()
    try:
        yield broker
    finally:
        broker.stop()
