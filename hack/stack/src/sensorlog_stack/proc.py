"""Start and stop local server processes for dev mode and integration tests.

Every server binds 127.0.0.1 only, writes its output to a log file in its own
directory, and is stopped by PID (its whole process group), so a test run
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
TOOLS = Path(os.environ.get("SENSORLOG_TOOLS_DIR", ROOT / ".tools"))


class StackError(RuntimeError):
    """A local component could not be installed, started or reached."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = (
            "\n--- last lines of "
            + str(log)
            + " ---\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        )
    raise StackError(f"{what} not ready after {timeout:.0f}s{tail}")


def as_user(argv: Sequence[str], user: str | None) -> list[str]:
    """``argv``, run as ``user`` (and its group) when given.

    setpriv drops the privileges after exec, so Popen can vfork: with its own
    user= it must fork, and a forked child runs the parent's atfork handlers
    (gRPC's, while gRPC threads were busy, segfaulted a PostgreSQL restart
    under query load).
    """
    if user is None:
        return list(argv)
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--", *argv]


class Process:
    """A child process in its own session, killed with its group on stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(log, "ab")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            as_user(argv, user),
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        # Reap anything left in the group (e.g. forked helpers).
        self.signal(signal.SIGKILL)
        self._logf.close()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(5)
