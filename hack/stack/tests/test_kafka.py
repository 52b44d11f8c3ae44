"""The local Kafka launcher against the real broker, through aiokafka as the
writer will use it: produce, consume in a group, commit, survive restarts."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from sensorlog_stack import kafka as kafka_mod
from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.proc import StackError, port_open


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    # acks=all + idempotence: what the pipeline's producers use, and it proves
    # the broker accepts InitProducerId on a single node.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i, v in enumerate(values):
            await producer.send(topic, v, key=str(i % 7).encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str, topic: str, group: str, count: int, *, commit: bool = True
) -> list[bytes]:
    """Read ``count`` records as member of ``group``, then commit what was read."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=count,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=10_000, max_records=count - len(got))
            if not batches:
                break
            for records in batches.values():
                got += [r.value for r in records if r.value is not None]
        if commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return got


async def _committed(bootstrap: str, topic: str, group: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        total = 0
        for p in range(partitions):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


@pytest.mark.integration
async def test_group_consumes_everything_once_and_commits(kafka: Kafka) -> None:
    topic, group = _name("readings"), _name("writer")
    await create_topics(kafka.bootstrap, {topic: 3})
    sent = [f"r{i}".encode() for i in range(60)]
    await _produce(kafka.bootstrap, topic, sent)

    first = await _consume(kafka.bootstrap, topic, group, 40)
    rest = await _consume(kafka.bootstrap, topic, group, 20)

    # The second member resumes at the committed offsets: no loss, no duplicate.
    assert sorted(first + rest) == sorted(sent)
    assert await _committed(kafka.bootstrap, topic, group, 3) == 60


@pytest.mark.integration
async def test_unknown_topic_is_created_with_default_partitions(kafka: Kafka) -> None:
    topic = _name("auto")
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        # The metadata request for an unknown topic creates it (dev mode relies
        # on this instead of an explicit create_topics call).
        assert len(await producer.partitions_for(topic)) == kafka.partitions
        await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()


@pytest.mark.integration
async def test_restart_keeps_messages_and_committed_offsets(tmp_path: Path) -> None:
    broker = Kafka(tmp_path / "kafka").start()
    try:
        topic, group = _name("readings"), _name("writer")
        await create_topics(broker.bootstrap, {topic: 2})
        sent = [f"m{i}".encode() for i in range(50)]
        await _produce(broker.bootstrap, topic, sent)
        first = await _consume(broker.bootstrap, topic, group, 30)

        old_pid = broker.pid
        broker.stop()
        broker.start()
        assert broker.pid != old_pid

        # Same address after restart: clients keep their bootstrap setting.
        rest = await _consume(broker.bootstrap, topic, group, 20)
        assert sorted(first + rest) == sorted(sent)
        everything = await _consume(broker.bootstrap, topic, _name("audit"), 50)
        assert sorted(everything) == sorted(sent)
    finally:
        broker.stop()


@pytest.mark.integration
async def test_restart_under_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    broker = Kafka(tmp_path / "kafka").start()
    topic = _name("load")
    acked: list[bytes] = []
    stop_sending = asyncio.Event()

    async def send_forever() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=3000,
            retry_backoff_ms=100,
        )
        await producer.start()
        try:
            i = 0
            while not stop_sending.is_set():
                value = f"L{i}".encode()
                i += 1
                try:
                    await producer.send_and_wait(topic, value)
                except KafkaError:
                    await asyncio.sleep(0.1)  # broker is down: this one was not acked
                    continue
                acked.append(value)
        finally:
            await producer.stop()

    try:
        await create_topics(broker.bootstrap, {topic: 2})
        sender = asyncio.create_task(send_forever())
        await asyncio.sleep(1.5)
        before = len(acked)
        # In threads so the producer keeps sending (and failing) while the
        # broker is down; start() must rebind the same port while the client's
        # old connections are still in TIME_WAIT.
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        await asyncio.sleep(3)
        stop_sending.set()
        await sender

        assert before > 0 and len(acked) > before, "producer did not resume after restart"
        got = await _consume(broker.bootstrap, topic, _name("audit"), len(acked))
        assert set(acked) <= set(got), f"{len(set(acked) - set(got))} acked records lost"
    finally:
        stop_sending.set()
        broker.stop()


@pytest.mark.integration
async def test_kill_keeps_acknowledged_messages(tmp_path: Path) -> None:
    broker = Kafka(tmp_path / "kafka").start()
    try:
        topic, group = _name("readings"), _name("writer")
        sent = [f"k{i}".encode() for i in range(30)]
        await _produce(broker.bootstrap, topic, sent)
        assert len(await _consume(broker.bootstrap, topic, group, 10)) == 10

        broker.kill()
        assert not port_open(broker.port)
        broker.start()

        # acks=all reached the page cache, which outlives a SIGKILLed process.
        assert await _committed(broker.bootstrap, topic, group, broker.partitions) == 10
        everything = await _consume(broker.bootstrap, topic, _name("audit"), 30)
        assert sorted(everything) == sorted(sent)
    finally:
        broker.stop()


@pytest.mark.integration
def test_stop_leaves_no_process(tmp_path: Path) -> None:
    broker = Kafka(tmp_path / "kafka").start()
    pid = broker.pid
    assert pid is not None
    broker.stop()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not port_open(broker.port)
    assert not port_open(broker.controller_port)


def test_missing_jars_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_mod, "KAFKA_LIBS", tmp_path / "no-libs")
    with pytest.raises(StackError, match="make tools"):
        Kafka(tmp_path / "kafka")
