"""A real Consul agent (``consul agent -dev``) on 127.0.0.1 for registration and KV tests.

Built by ``hack/tools/consul.sh`` into ``.tools/bin/consul``. Dev mode keeps
everything in memory: each start is an empty catalog and KV store. Every port
is a free one and DNS and the agent's own gRPC (xDS) listener are off, so
concurrent runs do not collide.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from sensorlog_stack.proc import TOOLS, Process, StackError, free_port, wait_until

BINARY = TOOLS / "bin" / "consul"


class Consul:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.proc: Process | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60) -> Consul:
        if not BINARY.is_file():
            raise StackError(f"{BINARY} missing: run hack/tools/consul.sh (or make tools)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "ports.json"
        config.write_text(
            json.dumps(
                {
                    "ports": {
                        "http": self.http_port,
                        "dns": -1,
                        "grpc": -1,
                        "serf_lan": free_port(),
                        "serf_wan": free_port(),
                        "server": free_port(),
                    },
                }
            )
        )
        self.proc = Process(
            "consul",
            [
                *[str(BINARY), "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1"],
                *["-node", "sensorlog-test", "-config-file", str(config)],
            ],
            self.workdir / "consul.log",
        )
        wait_until(self._has_leader, timeout, "consul leader", self.workdir / "consul.log")
        return self

    def _has_leader(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise StackError(f"consul exited; see {self.workdir / 'consul.log'}")
        try:
            with urllib.request.urlopen(f"{self.address}/v1/status/leader", timeout=1) as r:
                return bool(json.loads(r.read()))
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def get(self, path: str) -> tuple[int, object]:
        """GET a JSON API path (for assertions): (status, decoded body or None)."""
        try:
            with urllib.request.urlopen(f"{self.address}{path}", timeout=5) as r:
                body = r.read()
                return r.status, json.loads(body) if body else None
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
