"""The query service over gRPC TLS and mTLS: queries and grpc.health.v1 over TLS, the
plaintext probe port serving health only, and the sensorlog-query CLI's --ca/--cert/--key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sensorlog.v1 import query_pb2 as pb
from sensorlog.v1 import query_pb2_grpc as pb_grpc
from sensorlog_query.tls import channel_credentials
from sensorlog_stack.proc import free_port
from sensorlog_stack.services import QueryProcess, grpc_serving

from .conftest import Pki

pytestmark = pytest.mark.integration


def start_query(tmp_path: Path, dsn: str, pki: Pki, mtls: bool) -> QueryProcess:
    env = {
        "SENSORLOG_QUERY_DATABASE_DSN": dsn,
        "SENSORLOG_QUERY_GRPC_TLS_CERT_FILE": str(pki.server.cert),
        "SENSORLOG_QUERY_GRPC_TLS_KEY_FILE": str(pki.server.key),
        "SENSORLOG_QUERY_GRPC_HEALTH_PORT": str(free_port()),
    }
    if mtls:
        env["SENSORLOG_QUERY_GRPC_TLS_CLIENT_CA_FILE"] = str(pki.ca.cert)
    q = QueryProcess(tmp_path / "query.log", env)
    q.credentials = channel_credentials(
        str(pki.ca.cert),
        str(pki.client.cert) if mtls else None,
        str(pki.client.key) if mtls else None,
    )
    return q.start()


@pytest.fixture
def tls_query(tmp_path: Path, pg_dsn: str, pki: Pki) -> Iterator[QueryProcess]:
    q = start_query(tmp_path, pg_dsn, pki, mtls=False)
    try:
        yield q
    finally:
        q.terminate()


@pytest.fixture
def mtls_query(tmp_path: Path, pg_dsn: str, pki: Pki) -> Iterator[QueryProcess]:
    q = start_query(tmp_path, pg_dsn, pki, mtls=True)
    try:
        yield q
    finally:
        q.terminate()


def list_sensors(target: str, creds: grpc.ChannelCredentials | None) -> int:
    channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with channel:
        stub = pb_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
        return len(stub.ListSensors(pb.ListSensorsRequest(), timeout=5).sensors)


def cli(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sensorlog_query.cli", "--target", target, *args, "sensors"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def health_port(q: QueryProcess) -> int:
    return int(q.env["SENSORLOG_QUERY_GRPC_HEALTH_PORT"])


def test_tls_serves_queries_and_health_and_refuses_plaintext(
    tls_query: QueryProcess, pki: Pki
) -> None:
    creds = channel_credentials(str(pki.ca.cert))
    assert grpc_serving(tls_query.target, credentials=creds)
    assert list_sensors(tls_query.target, creds) == 0
    # A plaintext client gets nothing from the TLS port.
    assert not grpc_serving(tls_query.target)
    with pytest.raises(grpc.RpcError) as err:
        list_sensors(tls_query.target, None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # A client that does not trust the server's CA refuses the connection.
    assert not grpc_serving(
        tls_query.target, credentials=channel_credentials(str(pki.rogue_ca.cert))
    )


def test_probe_port_is_plaintext_health_only(tls_query: QueryProcess) -> None:
    target = f"127.0.0.1:{health_port(tls_query)}"
    assert grpc_serving(target)  # what a kubelet gRPC probe does
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        named = stub.Check(health_pb2.HealthCheckRequest(service="sensorlog.v1.QueryService"))
        assert named.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        list_sensors(target, None)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_mtls_requires_a_client_certificate_from_the_client_ca(
    mtls_query: QueryProcess, pki: Pki
) -> None:
    good = channel_credentials(str(pki.ca.cert), str(pki.client.cert), str(pki.client.key))
    assert grpc_serving(mtls_query.target, credentials=good)
    assert list_sensors(mtls_query.target, good) == 0
    for creds in (
        channel_credentials(str(pki.ca.cert)),  # no client certificate
        channel_credentials(
            str(pki.ca.cert), str(pki.rogue_client.cert), str(pki.rogue_client.key)
        ),
    ):
        with pytest.raises(grpc.RpcError) as err:
            list_sensors(mtls_query.target, creds)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_cli_speaks_tls_and_mtls(
    tls_query: QueryProcess, mtls_query: QueryProcess, pki: Pki
) -> None:
    ok = cli(tls_query.target, "--ca", str(pki.ca.cert))
    assert ok.returncode == 0, ok.stderr
    assert "id" in ok.stdout
    plain = cli(tls_query.target, "--timeout", "3")
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr
    mutual = cli(
        mtls_query.target, "--ca", str(pki.ca.cert), "--cert", str(pki.client.cert),
        "--key", str(pki.client.key),
    )  # fmt: skip
    assert mutual.returncode == 0, mutual.stderr
    no_cert = cli(mtls_query.target, "--ca", str(pki.ca.cert), "--timeout", "3")
    assert no_cert.returncode == 1 and "UNAVAILABLE" in no_cert.stderr
    half = cli(mtls_query.target, "--cert", str(pki.client.cert))
    assert half.returncode != 0 and "--cert and --key go together" in half.stderr
