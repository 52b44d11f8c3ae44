"""Real kube-apiserver + real TimescaleDB + the operator as a subprocess under the chart's RBAC."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sensorlog_stack.apiserver import HELM, ControlPlane
from sensorlog_stack.fixtures_apiserver import control_plane
from sensorlog_stack.proc import Process, free_port, wait_until
from sensorlog_stack.timescale import Timescale

__all__ = ["control_plane"]

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "operator" / "crds" / "hypertables.timescale.sensorlog.io.yaml"
CHART = ROOT / "charts" / "sensorlog"
OPERATOR_NS = "sensorlog-system"
RELEASE = "sl"
SERVICE_ACCOUNT = f"{RELEASE}-sensorlog-operator"
NS = "sensors"
DRIFT_INTERVAL = 2.0


class TcpProxy:
    """A TCP forwarder to the database whose listener can be closed, so new
    connections are refused exactly as when the database host is down."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        self._thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Refuse new connections; running ones finish (the operator's are short-lived)."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class Cluster:
    """The control plane as the tests use it: admin kubectl plus the operator's identity."""

    def __init__(self, cp: ControlPlane, sa_kubeconfig: Path) -> None:
        self.cp = cp
        self.sa_kubeconfig = sa_kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        return self.cp.kubectl(*args, stdin=stdin, check=check)

    def apply(self, doc: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl("apply", "-f", "-", stdin=json.dumps(doc), check=check)

    def get(self, name: str, ns: str = NS) -> dict[str, Any] | None:
        r = self.cp.kubectl("get", "hypertable", name, "-n", ns, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def events(self, name: str, ns: str = NS) -> list[dict[str, Any]]:
        r = self.cp.kubectl(
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        )
        return list(json.loads(r.stdout)["items"])


def chart_operator_rbac() -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole and binding exactly as the chart renders them."""
    out = subprocess.run(
        [
            str(HELM),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            OPERATOR_NS,
            "--show-only",
            "templates/operator.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in kinds]


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> Cluster:
    if not HELM.is_file():
        pytest.skip("helm not installed: run `make tools`")
    cp = control_plane
    cp.kubectl("apply", "--server-side", "-f", str(CRD))
    cp.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/hypertables.timescale.sensorlog.io",
    )
    for ns in (OPERATOR_NS, NS):
        cp.kubectl("create", "namespace", ns, check=False)
    for doc in chart_operator_rbac():
        # helm installs namespaced objects into the release namespace; so do we.
        cp.kubectl("apply", "-n", OPERATOR_NS, "-f", "-", stdin=json.dumps(doc))
    sa = cp.service_account_kubeconfig(OPERATOR_NS, SERVICE_ACCOUNT)
    return Cluster(cp, sa)


@pytest.fixture(scope="session")
def db_proxy(timescale: Timescale) -> Iterator[TcpProxy]:
    proxy = TcpProxy(timescale.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def dsn(db_proxy: TcpProxy) -> str:
    return f"postgresql://postgres@127.0.0.1:{db_proxy.port}/postgres"


class Operator:
    """sensorlog-operator as in its pod: its own process, the chart's ServiceAccount token.

    It can be stopped and started again (same log file, same status port), with
    settings overridden for one run, to test what a restart does.
    """

    def __init__(self, env: dict[str, str], log: Path, status_port: int) -> None:
        self.env, self.log_path, self.status_port = env, log, status_port
        self.proc: Process | None = None
        self._run_offset = 0

    def start(self, **settings: str) -> None:
        """Start with the session's environment, ``settings`` overriding
        ``SENSORLOG_OPERATOR_<NAME>`` for this run; return once /readyz answers."""
        assert self.proc is None or not self.proc.alive(), "the operator is already running"
        overrides = {f"SENSORLOG_OPERATOR_{k.upper()}": v for k, v in settings.items()}
        self._run_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [sys.executable, "-m", "sensorlog_operator"]
        env = {**self.env, **overrides}
        self.proc = Process("operator", argv, self.log_path, env=env, cwd=ROOT)
        wait_until(lambda: _ready(self), 60, "sensorlog-operator /readyz", self.log_path)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, as Kubernetes stops a pod; the exit code (None: it had to be killed)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        proc.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout)
        code = proc.popen.returncode
        proc.stop()
        return code

    def kill(self) -> None:
        """SIGKILL: no handler finishes, nothing is written back."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def log(self) -> str:
        """Everything every run of this operator logged."""
        return self.log_path.read_text(errors="replace")

    def run_log(self) -> str:
        """What the current (or last) run logged."""
        with open(self.log_path, "rb") as f:
            f.seek(self._run_offset)
            return f.read().decode(errors="replace")

    def http(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.status_port}{path}"
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    cluster.kubectl("create", "secret", "generic", "db", "-n", NS, f"--from-literal=dsn={dsn}")
    port = free_port()
    env = {
        "KUBECONFIG": str(cluster.sa_kubeconfig),
        "SENSORLOG_OPERATOR_DRIFT_INTERVAL": str(DRIFT_INTERVAL),
        "SENSORLOG_OPERATOR_DRIFT_INITIAL_DELAY": "1",
        "SENSORLOG_OPERATOR_RETRY_DELAY": "2",
        "SENSORLOG_OPERATOR_DB_CONNECT_TIMEOUT": "5",
        "SENSORLOG_OPERATOR_DELETE_RETRIES": "3",
        "SENSORLOG_OPERATOR_METRICS_PORT": str(port),
        "SENSORLOG_OPERATOR_METRICS_HOST": "127.0.0.1",
        "SENSORLOG_OPERATOR_LOG_FORMAT": "text",
        "SENSORLOG_OPERATOR_NAMESPACES": "",  # cluster-wide, whatever the shell has
    }
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = Operator(env, log, port)
    try:
        op.start()
        yield op
    finally:
        op.stop()
        if os.environ.get("SENSORLOG_OPERATOR_TEST_LOG"):
            print(op.log())


def _ready(op: Operator) -> bool:
    if op.proc is None or not op.proc.alive():
        raise RuntimeError(f"operator exited:\n{op.run_log()[-4000:]}")
    try:
        return op.http("/readyz")[0] == 200
    except OSError:
        return False


def eventually(check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``check()`` until it returns a truthy value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout:.0f}s; last: {last!r}")
