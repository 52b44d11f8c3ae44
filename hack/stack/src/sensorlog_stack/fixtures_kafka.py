"""pytest fixture: one real Kafka broker for the whole test session.

The root conftest.py lists this module in ``pytest_plugins``, so any test can
ask for ``kafka``. Tests share the broker, so each should use its own topic and
group names (e.g. with a uuid suffix); a test that stops or kills a broker
starts its own ``Kafka(tmp_path / ...)`` instead.
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
