"""Fixtures for writer tests on the real Kafka broker and real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.pipeline import Topics
from sensorlog_stack.services import WriterProcess


@pytest.fixture
async def topics(kafka: Kafka) -> Topics:
    tag = uuid.uuid4().hex[:8]
    t = Topics(f"readings-{tag}", f"sensors-{tag}", f"writer-{tag}")
    await create_topics(
        kafka.bootstrap, {t.readings: 6, t.sensors: 2, t.readings_dlq: 1, t.sensors_dlq: 1}
    )
    return t


@pytest.fixture
def writers(tmp_path: Path) -> Iterator[Callable[..., WriterProcess]]:
    started: list[WriterProcess] = []

    def make(env: dict[str, str], name: str = "writer") -> WriterProcess:
        w = WriterProcess(tmp_path / f"{name}-{len(started)}.log", env, name=name)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


@pytest.fixture
async def dsn(pg_dsn: str) -> AsyncIterator[str]:
    yield pg_dsn
