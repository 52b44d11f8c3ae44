"""``sensorlog-writer``: run one member of the writer consumer group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sensorlog_core import consul, db, kafka_security
from sensorlog_core.logs import setup_logging
from sensorlog_core.settings import load
from sensorlog_core.statusserver import StatusServer
from sensorlog_core.tracing import setup_tracing
from sensorlog_writer.settings import WriterSettings
from sensorlog_writer.writer import Writer

log = logging.getLogger("sensorlog_writer")
# Exit code when the database or Kafka refuses our credentials or certificate.
EXIT_REFUSED = 3
PREFLIGHT_TIMEOUT_S = 10.0
SERVICE = "sensorlog-writer"


def make_consumer(s: WriterSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=s.group_id,
        client_id=f"{s.group_id}-writer",
        enable_auto_commit=False,
        auto_offset_reset=s.auto_offset_reset,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        max_poll_interval_ms=s.max_poll_interval_ms,
        fetch_max_bytes=s.fetch_max_bytes,
        max_partition_fetch_bytes=s.max_partition_fetch_bytes,
        max_poll_records=s.batch_max_records,
        **kafka_security.client_kwargs(s),
    )


def make_producer(s: WriterSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=s.kafka_bootstrap_servers,
        client_id=f"{s.group_id}-dlq",
        acks="all",
        linger_ms=5,
        max_request_size=1 << 20,
        **kafka_security.client_kwargs(s),
    )


async def run(s: WriterSettings, remote: consul.RemoteConfig[WriterSettings] | None = None) -> int:
    try:
        await db.preflight(s.database_url(), PREFLIGHT_TIMEOUT_S)
        await kafka_security.preflight(s.kafka_bootstrap_servers, s, PREFLIGHT_TIMEOUT_S)
    except (db.DatabaseRefused, kafka_security.KafkaSecurityError) as exc:
        log.error(
            "refused at start-up; retrying cannot fix this, check the settings",
            extra={"reason": str(exc)},
        )
        return EXIT_REFUSED
    pool = await db.create_pool(
        s.database_url(),
        min_size=0,
        max_size=s.db_pool_max,
        command_timeout=s.db_command_timeout_s,
    )
    consumer, producer = make_consumer(s), make_producer(s)
    writer = Writer(s, pool, consumer, producer)
    status = StatusServer(s.metrics_host, s.metrics_port, ready=writer.ready)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, writer.stop)
    if s.metrics_port:
        await status.start()
    registrar = _registrar(s) if s.consul_enabled else None
    if registrar is not None:
        registrar.start()
    if remote is not None:
        remote.start(lambda new, changed: setattr(writer, "s", new))
    await producer.start()
    await consumer.start()
    writer.subscribe()
    log.info("writer started", extra={"group": s.group_id, "topics": list(s.topics)})
    task = asyncio.create_task(writer.run())
    stop_requested = asyncio.create_task(writer._stopping.wait())
    await asyncio.wait({task, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if task.done() and task.exception() is not None:
        log.error("writer loop failed", exc_info=task.exception())
        code = 1
    else:
        try:
            await asyncio.wait_for(asyncio.shield(task), s.shutdown_grace_s)
        except TimeoutError:
            log.warning("grace period over; abandoning the in-flight batch")
            writer.abandon()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    stop_requested.cancel()
    if remote is not None:
        await remote.stop()
    if registrar is not None:
        # Out of the catalog before the consumer leaves: no one is sent here meanwhile.
        await registrar.stop()
    # Leaving the group lets the others take our partitions at once.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(consumer.stop(), 10)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), 10)
    await status.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pool.close(), 5)
    log.info("writer stopped")
    return code


def _registrar(s: WriterSettings) -> consul.Registrar | None:
    if not s.metrics_port:
        log.warning("consul registration needs the status port (its /readyz is the check); off")
        return None
    address = consul.advertised_address(s.consul_service_address)
    registration = consul.Registration(
        name=s.consul_service_name or SERVICE,
        address=address,
        port=s.metrics_port,
        check=consul.http_check(f"http://{address}:{s.metrics_port}/readyz", s),
        tags=["writer", *s.consul_tags],
        meta={
            "version": consul.version_of(SERVICE),
            "topics": ",".join(s.topics),
            "group": s.group_id,
        },
    )
    return consul.Registrar(consul.client_for(s), registration, s.consul_retry_max_s)


async def main_async(s: WriterSettings) -> int:
    remote = None
    if s.consul_enabled and s.consul_kv_config:
        remote = consul.RemoteConfig(
            consul.client_for(s),
            WriterSettings,
            consul.default_prefix(s, s.consul_service_name or SERVICE),
            s,
            retry_max_s=s.consul_retry_max_s,
        )
        s = await remote.initial()
        logging.getLogger().setLevel(s.log_level)
    return await run(s, remote)


def main() -> None:
    settings = load(WriterSettings)
    setup_logging(settings.log_level, settings.log_format)
    tracing = setup_tracing(settings, SERVICE, SERVICE)
    try:
        code = asyncio.run(main_async(settings))
    finally:
        if tracing is not None:
            tracing.shutdown()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
