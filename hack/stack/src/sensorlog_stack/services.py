"""sensorlog's own processes (writer, query) as real child processes.

Used by dev mode, integration tests, the resilience suite and benchmarks: the
same entry points a container runs, configured by environment variables only.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sensorlog_stack.proc import Process, StackError, free_port, wait_until


def http_status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class ServiceProcess:
    """A sensorlog process (``python -m MODULE``) with its status endpoint on a free port."""

    module = ""
    prefix = ""

    def __init__(self, log: Path, env: dict[str, str], name: str | None = None) -> None:
        self.log = log
        self.name = name or self.module
        self.status_port = free_port()
        self.env = {
            f"{self.prefix}METRICS_HOST": "127.0.0.1",
            f"{self.prefix}LOG_LEVEL": "INFO",
            **self._port_env(),
            **env,
        }
        self.proc: Process | None = None

    def _port_env(self) -> dict[str, str]:
        return {f"{self.prefix}METRICS_PORT": str(self.status_port)}

    def start(self, wait_ready: bool = True, timeout: float = 60) -> ServiceProcess:
        self.proc = Process(self.name, [sys.executable, "-m", self.module], self.log, env=self.env)
        if wait_ready:
            wait_until(self._ready, timeout, f"{self.name} ready", self.log)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise StackError(
                f"{self.name} exited with {self.proc.popen.returncode}; see {self.log}"
            )
        return http_status(self.status_port, "/readyz") == 200

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.signal(signal.SIGTERM)
        try:
            code = self.proc.popen.wait(timeout)
        finally:
            self.proc.stop()
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)


class WriterProcess(ServiceProcess):
    module = "sensorlog_writer"
    prefix = "SENSORLOG_WRITER_"


def run_command(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise StackError(f"{argv[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def grpc_serving(target: str, timeout: float = 1.0, credentials: Any = None) -> bool:
    """True when the server's grpc.health.v1 answers SERVING for the whole server.

    ``credentials`` (grpc.ChannelCredentials) checks a TLS server over TLS.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with (
            grpc.secure_channel(target, credentials)
            if credentials is not None
            else grpc.insecure_channel(target)
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


class QueryProcess(ServiceProcess):
    module = "sensorlog_query"
    prefix = "SENSORLOG_QUERY_"

    def __init__(self, log: Path, env: dict[str, str], name: str | None = None) -> None:
        # The process must be told its port: with 0 we could not find it again.
        self.grpc_port = int(env.get("SENSORLOG_QUERY_GRPC_PORT") or 0) or free_port()
        env = {"SENSORLOG_QUERY_GRPC_HOST": "127.0.0.1", **env}
        env["SENSORLOG_QUERY_GRPC_PORT"] = str(self.grpc_port)
        super().__init__(log, env, name)
        # A TLS server is probed over TLS: grpc.ChannelCredentials, set by the caller.
        self.credentials: Any = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise StackError(
                f"{self.name} exited with {self.proc.popen.returncode}; see {self.log}"
            )
        return grpc_serving(self.target, credentials=self.credentials)
