"""A real Apache Kafka 4.x broker (KRaft) on 127.0.0.1 for tests and dev mode.

One JVM is both controller and broker (``process.roles=broker,controller``),
the jars come from Maven Central via ``hack/tools/kafka.sh`` into
``.tools/kafka/libs``. The data directory survives ``stop()``/``kill()`` and a
later ``start()`` on the same ``base_dir``, so resilience tests can bounce the
broker under load and still find their messages and committed offsets.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sensorlog_stack.proc import ROOT, TOOLS, Process, StackError, free_port, wait_until

KAFKA_HOME = TOOLS / "kafka"
KAFKA_LIBS = KAFKA_HOME / "libs"
# Class-data-sharing archive written by hack/tools/kafka.sh's warm-up run; it
# takes roughly a third off the JVM start and is optional.
KAFKA_CDS = KAFKA_HOME / "kafka.jsa"
CONF_DIR = ROOT / "hack" / "kafka"

START_TIMEOUT = 90.0
# __consumer_offsets partitions (offsets.topic.num.partitions below).
OFFSETS_PARTITIONS = 4
STOP_TIMEOUT = 30.0
CREATE_TIMEOUT = 30.0


# Brokers run in their own session, so they would outlive a Python process that
# ends without stop() (a failed fixture, Ctrl-C in dev mode); stop them at exit.
_running: set[Kafka] = set()


@atexit.register
def _stop_all() -> None:
    for broker in list(_running):
        broker.stop()


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError(
            "java not found: Kafka needs Java 17+ (apt-get install openjdk-17-jre-headless)"
        )
    return found


def _jvm_options() -> list[str]:
    opts = [
        line.strip()
        for line in (CONF_DIR / "jvm.options").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if KAFKA_CDS.exists():
        opts.append(f"-XX:SharedArchiveFile={KAFKA_CDS}")
    # A knob for CI or a debugging session (e.g. a bigger heap), not for tests.
    opts += shlex.split(os.environ.get("SENSORLOG_KAFKA_JVM_OPTS", ""))
    opts.append(f"-Dlog4j2.configurationFile={CONF_DIR / 'log4j2.properties'}")
    return opts


def _api_versions_ok(port: int) -> bool:
    """True once the broker answers an ApiVersions request.

    A TCP connect alone is not enough: the kernel completes the handshake as soon
    as the socket is bound, before Kafka processes requests. Kafka enables
    request processing only after the broker is registered and unfenced, so an
    answer here means clients can produce and consume.
    """
    client_id = b"sensorlog-probe"
    # Request header v1: api_key 18 (ApiVersions), version 0, correlation id,
    # client id; the v0 body is empty.
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 10:
                chunk = s.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _size, correlation_id, error_code = struct.unpack(">iih", head)
    return bool(correlation_id == 1 and error_code == 0)


def _offsets_partition(group: str) -> int:
    """The __consumer_offsets partition Kafka assigns ``group`` to (Java's
    String.hashCode, masked to non-negative, modulo the partition count)."""
    data = group.encode("utf-16-be")  # Java hashes UTF-16 code units
    h = 0
    for (unit,) in struct.iter_unpack(">H", data):
        h = (31 * h + unit) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % OFFSETS_PARTITIONS


# One made-up group per __consumer_offsets partition, so that describing them
# asks every group coordinator shard whether it has finished loading.
_PROBE_GROUPS = sorted(
    {_offsets_partition(g): g for g in (f"sensorlog-probe-{i}" for i in range(64))}.values()
)


async def _wait_group_coordinators(bootstrap: str, timeout: float) -> None:
    """Return once every group coordinator shard answers OffsetFetch cleanly.

    After a restart (above all after kill()) the broker serves requests a moment
    before it has re-elected itself leader of __consumer_offsets and reloaded
    the groups. In that window aiokafka's consumer reads the top-level
    COORDINATOR_LOAD_IN_PROGRESS of OffsetFetch as "no committed offset" and
    would silently restart from auto_offset_reset, so start() waits it out.
    """
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.commit import OffsetFetchRequest

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await client.bootstrap()
    try:
        metadata = await client.fetch_all_metadata()
        if "__consumer_offsets" not in metadata.topics(exclude_internal_topics=False):
            return  # no group yet: created and loaded on first use
        node = next(iter(metadata.brokers())).nodeId  # one node: every coordinator
        while True:
            try:
                answers = [
                    await client.send(node, OffsetFetchRequest(group, None))
                    for group in _PROBE_GROUPS
                ]
                if all(a.error_code == 0 for a in answers):
                    return
            except KafkaError:
                pass  # connection reset while the broker settles: ask again
            if loop.time() > deadline:
                raise StackError(f"Kafka group coordinators not loaded after {timeout:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await client.close()


@dataclass(frozen=True)
class KafkaTls:
    """Extra secured listeners next to PLAINTEXT (which stays for admin and readiness).

    SSL requires a client certificate signed by ``ca_cert`` (mTLS); SASL_SSL logs
    users in with SCRAM-SHA-512, their credentials written at format time.
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path
    scram_users: Mapping[str, str] = field(default_factory=dict)


class Kafka:
    """One single-node Kafka cluster whose data lives in ``base_dir/data``."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        partitions: int = 3,
        tls: KafkaTls | None = None,
    ) -> None:
        if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
            raise StackError(
                f"Apache Kafka jars not found in {KAFKA_LIBS}: run `make tools` "
                "(or hack/tools/kafka.sh)"
            )
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log = base_dir / "kafka.log"
        self.partitions = partitions
        # Ports are remembered in base_dir so that a new Kafka object on the same
        # directory (dev mode re-run) keeps the address clients were given.
        saved = self._saved_ports()
        self.port = port or (saved[0] if saved else free_port())
        self.controller_port = saved[1] if saved else free_port()
        self.tls = tls
        self.ssl_port = free_port() if tls else 0
        self.sasl_ssl_port = free_port() if tls else 0
        self.proc: Process | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ssl_bootstrap(self) -> str:
        """The mTLS listener (tls set)."""
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """The SASL_SSL SCRAM-SHA-512 listener (tls set)."""
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def _saved_ports(self) -> tuple[int, int] | None:
        f = self.base_dir / "ports"
        if not f.exists():
            return None
        broker, controller = f.read_text().split()
        return int(broker), int(controller)

    def _properties(self) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # Static voters rather than a --standalone dynamic quorum: the voter
            # endpoint is then read from this file on every start instead of
            # being frozen into the metadata log, so the ports may change
            # between runs on the same data directory.
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "true",
            # One node: every internal topic must accept replication factor 1.
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Internal topics default to 50 partitions each; creating and loading
            # them costs seconds on the first group join and on every restart.
            "offsets.topic.num.partitions": str(OFFSETS_PARTITIONS),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.num.partitions": "1",
            # A lone consumer should not wait 3 s for others to join its group.
            "group.initial.rebalance.delay.ms": "0",
            # Let tests use short session timeouts (the default floor is 6 s) so
            # that a killed consumer's partitions move on quickly.
            "group.min.session.timeout.ms": "500",
            # After kill() the controller (restarted with the broker) still holds
            # the dead broker's registration and refuses the new one until its
            # session expires: 9 s by default, added to every crash restart.
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "500",
            # Thread pools sized for 2 shared cores instead of a server.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "num.replica.fetchers": "1",
            # The compaction buffer (default 128 MiB) is allocated up front and
            # would take a quarter of the small heap.
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            # Segments are small so that recovery after kill() reads little.
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if self.tls is not None:
            props.update(self._tls_properties(self.tls))
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _tls_properties(self, tls: KafkaTls) -> dict[str, str]:
        # Kafka reads PEM keystores directly: the private key followed by the chain.
        keystore = self.base_dir / "keystore.pem"
        keystore.write_text(tls.server_key.read_text() + tls.server_cert.read_text())
        keystore.chmod(0o600)
        listeners = f"SSL://127.0.0.1:{self.ssl_port},SASL_SSL://127.0.0.1:{self.sasl_ssl_port}"
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},{listeners},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},{listeners}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SSL:SSL,SASL_SSL:SASL_SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca_cert),
            "listener.name.ssl.ssl.client.auth": "required",
            "listener.name.sasl_ssl.ssl.client.auth": "none",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        }

    def _format(self, properties: Path) -> None:
        """Format KRaft storage once; a formatted directory keeps its cluster id."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = "-"
        # An id starting with "-" is taken for an option by the argument parser
        # (Kafka's own random ids avoid it the same way).
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        r = subprocess.run(
            [
                _java(),
                *_jvm_options(),
                "-cp",
                f"{KAFKA_LIBS}/*",
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(properties),
                *(
                    arg
                    for user, password in (self.tls.scram_users if self.tls else {}).items()
                    for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]")
                ),
            ],
            check=False,
            capture_output=True,
            text=True,
            cwd=self.base_dir,
        )
        if r.returncode != 0:
            output = (r.stdout + r.stderr)[-4000:]
            raise StackError(f"kafka-storage format failed in {self.data_dir}:\n{output}")

    def start(self) -> Kafka:
        if self.alive():
            return self
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "ports").write_text(f"{self.port} {self.controller_port}\n")
        properties = self.base_dir / "server.properties"
        properties.write_text(self._properties())
        self._format(properties)
        argv = [_java(), *_jvm_options(), "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(properties)]
        self.proc = Process("kafka", argv, self.log, cwd=self.base_dir)
        _running.add(self)
        try:
            wait_until(self._ready, START_TIMEOUT, f"Kafka on {self.bootstrap}", self.log)
            # start() is synchronous and may be called from inside a running
            # event loop (async tests), so the aiokafka probe gets its own.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(
                    asyncio.run, _wait_group_coordinators(self.bootstrap, START_TIMEOUT)
                ).result()
        except BaseException:
            # A broker that never became ready must not linger holding the port
            # and the data directory lock.
            self.kill()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
            # The fatal cause (port taken, bad config) is in the ERROR lines,
            # not in the long shutdown sequence that ends the log.
            errors = [line for line in lines if " ERROR " in line][:5]
            raise StackError(
                f"Kafka exited with {self.proc.popen.returncode}; see {self.log}\n"
                + "\n".join(errors)
            )
        return _api_versions_ok(self.port)

    def stop(self) -> None:
        """Graceful shutdown: Kafka flushes and closes its logs on SIGTERM,
        so the next start skips log recovery."""
        if self.proc is not None:
            self.proc.signal(signal.SIGTERM)
            # Past the timeout Process.stop() escalates to SIGKILL.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.popen.wait(STOP_TIMEOUT)
            self.proc.stop()
            self.proc = None
        _running.discard(self)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the next start recovers the logs."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None
        _running.discard(self)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


async def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    """Create ``{name: partitions}`` topics (replication 1) and wait for leaders.

    Topics that already exist are left as they are, so fixtures can call this
    on every run against a kept data directory. Gives up with StackError after
    CREATE_TIMEOUT seconds.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    topic_already_exists = 36
    timeout_ms = int(CREATE_TIMEOUT * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
        if new:
            resp = await admin.create_topics(new, timeout_ms=timeout_ms)
            for err in resp.topic_errors:
                name, code = err[0], err[1]
                if code not in (0, topic_already_exists):
                    message = err[2] if len(err) > 2 else ""
                    error = for_code(code).__name__
                    raise StackError(f"creating topic {name!r} failed: {error} {message}")
        # CreateTopics returns once the controller wrote the records; producers
        # that start right away would otherwise see LEADER_NOT_AVAILABLE.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CREATE_TIMEOUT
        while True:
            described = await admin.describe_topics(list(topics))
            if all(
                t["error_code"] == 0
                and len(t["partitions"]) >= topics[t["topic"]]
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            if loop.time() > deadline:
                raise StackError(
                    f"topics {sorted(topics)} have no leaders after {CREATE_TIMEOUT:.0f}s"
                )
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
