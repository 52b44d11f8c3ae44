"""A real TimescaleDB on 127.0.0.1 for tests and dev mode.

TimescaleDB 2.x on PostgreSQL 17 compiled to WASM (PGlite, from npm), behind the
project's wire-protocol front ``hack/pglite/server.mjs``, run with Node. Clients
connect as to any PostgreSQL server (asyncpg, pools included). The data
directory lives in ``base_dir`` and survives ``stop()`` and a later ``start()``.

What it is not: queries run one at a time in one backend session, clients take
turns between transactions, there is no background job scheduler (run a policy
with ``CALL run_job(id)``), no query cancel, no TLS or passwords. Use it to prove
Timescale SQL; use :class:`sensorlog_stack.postgres.Postgres` for load,
concurrency and fault tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from sensorlog_stack.proc import ROOT, Process, StackError, free_port, port_open, wait_until

# PGlite unpacks PostgreSQL and TimescaleDB and, on a fresh data dir, runs
# initdb inside WASM: seconds on an idle machine, much more on a busy CI box.
START_TIMEOUT = 180.0
# SIGTERM makes the front close PGlite, which checkpoints the data dir.
STOP_TIMEOUT = 60.0
READY_MARK = "pglite-timescaledb ready on"


def _pglite_dir() -> Path:
    return Path(os.environ.get("SENSORLOG_PGLITE_DIR", ROOT / "hack" / "pglite"))


def _node() -> str:
    node = os.environ.get("SENSORLOG_NODE") or shutil.which("node")
    if node is None:
        raise StackError(
            "node not found: the TimescaleDB front needs Node 20+ (or set SENSORLOG_NODE)"
        )
    return node


class Timescale:
    """One PGlite TimescaleDB server; user ``postgres``, database ``postgres``, trust auth."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        self.pglite_dir = _pglite_dir()
        if not (self.pglite_dir / "node_modules" / "@electric-sql" / "pglite").is_dir():
            raise StackError(
                f"PGlite is not installed in {self.pglite_dir / 'node_modules'}: run `make tools` "
                "(or hack/tools/pglite.sh, which runs npm ci there)"
            )
        self.node = _node()
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log = base_dir / "pglite.log"
        # Fixed for the object's life, so the DSN stays valid across restarts.
        self.port = port or free_port()
        self.proc: Process | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> Timescale:
        if self.proc is not None and self.proc.alive():
            return self
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if port_open(self.port):
            raise StackError(f"port {self.port} on 127.0.0.1 is already in use")
        # Only this start's lines count: the log is appended to across restarts.
        offset = self.log.stat().st_size if self.log.exists() else 0
        argv = [
            self.node,
            str(self.pglite_dir / "server.mjs"),
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.proc = Process("timescale", argv, self.log, cwd=self.pglite_dir)
        wait_until(
            lambda: self._ready(offset),
            START_TIMEOUT,
            f"TimescaleDB (PGlite) on 127.0.0.1:{self.port}",
            self.log,
        )
        return self

    def _ready(self, offset: int) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise StackError(
                f"TimescaleDB front exited with {self.proc.popen.returncode}; see {self.log}"
            )
        with open(self.log, "rb") as f:
            f.seek(offset)
            return READY_MARK.encode() in f.read()

    def stop(self) -> None:
        """Graceful: the front closes PGlite so the data dir is consistent."""
        if self.proc is None:
            return
        self.proc.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.popen.wait(STOP_TIMEOUT)
        self.proc.stop()  # SIGKILLs the group if it is still there; closes the log
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data dir may need recovery on the next start."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.stop()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
