"""gRPC transport security of the query server.

TLS when a certificate is configured; mTLS (every client presents a certificate
signed by the client CA) when a client CA is configured as well. The health
service is served on the TLS port like everything else; an optional plaintext
port carries *only* grpc.health.v1 for kubelet gRPC probes, which cannot speak
TLS, so no query ever travels unencrypted.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2_grpc

from sensorlog_query.settings import QuerySettings


def server_credentials(s: QuerySettings) -> grpc.ServerCredentials | None:
    if s.grpc_tls_cert_file is None or s.grpc_tls_key_file is None:
        return None
    chain = (s.grpc_tls_key_file.read_bytes(), s.grpc_tls_cert_file.read_bytes())
    client_ca = s.grpc_tls_client_ca_file.read_bytes() if s.grpc_tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [chain],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def bind(server: grpc.aio.Server, s: QuerySettings) -> int:
    """Add the service port (TLS when configured); returns the bound port, 0 on failure."""
    address = f"{s.grpc_host}:{s.grpc_port}"
    creds = server_credentials(s)
    if creds is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, creds)


async def start_health_only_server(
    health: health_pb2_grpc.HealthServicer, s: QuerySettings
) -> grpc.aio.Server | None:
    """The plaintext probe port (grpc_health_port), sharing the main server's health state."""
    if not s.grpc_health_port:
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(f"{s.grpc_host}:{s.grpc_health_port}") == 0:
        raise OSError(f"cannot bind the health port {s.grpc_host}:{s.grpc_health_port}")
    await server.start()
    return server


def channel_credentials(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """Client side: trust ``ca_file`` (None: the system roots), present a certificate for mTLS."""

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file),
        private_key=read(key_file),
        certificate_chain=read(cert_file),
    )
