"""A real PostgreSQL 15 server (Debian package) on 127.0.0.1 for tests and dev.

initdb refuses to run as root, so when we are root the cluster is owned by and
run as the ``postgres`` system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sensorlog_stack.proc import Process, StackError, as_user, free_port, wait_until

PG_BIN = Path(os.environ.get("SENSORLOG_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _run_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


@dataclass(frozen=True)
class PostgresTls:
    """Serve TLS with this certificate; roles other than the admin then need TLS and a
    SCRAM password (pg_hba ``hostssl ... scram-sha-256``), while the admin keeps trust
    so fixtures can create databases and roles."""

    server_cert: Path
    server_key: Path


# Read top-down, first match wins.
_TLS_HBA = """\
local   all  all                 trust
host    all  {admin}  127.0.0.1/32  trust
hostssl all  all      127.0.0.1/32  scram-sha-256
host    all  all      127.0.0.1/32  reject
"""


class Postgres:
    """One PostgreSQL cluster in ``data_dir``, trust auth on loopback only (unless ``tls``)."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        user: str = "postgres",
        tls: PostgresTls | None = None,
    ) -> None:
        if not (PG_BIN / "postgres").exists():
            raise StackError(
                f"PostgreSQL 15 not found in {PG_BIN}: run `make tools` "
                "(apt-get install postgresql-15) or set SENSORLOG_PG_BIN"
            )
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.sock_dir = base_dir / "sock"
        self.port = port or free_port()
        self.db_user = user
        self.tls = tls
        self.proc: Process | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.db_user}@127.0.0.1:{self.port}/postgres"

    def _chown(self, path: Path) -> None:
        run_as = _run_user()
        if run_as:
            # The postgres user must be able to reach the directory: temp dirs
            # made by root are 0700, so open the path for traversal only.
            for parent in path.resolve().parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
            pw = pwd.getpwnam(run_as)
            for p in [path, *path.rglob("*")]:
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.base_dir)
        initdb = [
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.db_user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]
        r = subprocess.run(
            as_user(initdb, _run_user()),
            check=False,
            capture_output=True,
            text=True,
            cwd=self.base_dir,
        )
        if r.returncode != 0:
            raise StackError(f"initdb failed in {self.data_dir}: {r.stderr.strip()}")

    def start(self) -> Postgres:
        self.init()
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.sock_dir)
        argv = [
            str(PG_BIN / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.sock_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
            *self._tls_args(),
        ]
        log = self.base_dir / "postgres.log"
        if log.exists():
            self._chown(log)
        self.proc = Process("postgres", argv, log, cwd=self.base_dir, user=_run_user())
        wait_until(self._ready, 30, f"PostgreSQL on 127.0.0.1:{self.port}", log)
        return self

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        # PostgreSQL refuses a key others can read, and it runs as the postgres user:
        # copies inside the data directory get the right owner and mode.
        cert, key = self.data_dir / "server.crt", self.data_dir / "server.key"
        shutil.copyfile(self.tls.server_cert, cert)
        shutil.copyfile(self.tls.server_key, key)
        key.chmod(0o600)
        (self.data_dir / "pg_hba.conf").write_text(_TLS_HBA.format(admin=self.db_user))
        self._chown(self.data_dir)
        return [
            "-c",
            "ssl=on",
            "-c",
            f"ssl_cert_file={cert}",
            "-c",
            f"ssl_key_file={key}",
            "-c",
            "password_encryption=scram-sha-256",
        ]

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise StackError(f"PostgreSQL exited; see {self.base_dir / 'postgres.log'}")
        r = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return r.returncode == 0

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT = PostgreSQL's "fast" shutdown: roll back and exit at once.
            import signal

            self.proc.signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.popen.wait(15)
            self.proc.stop()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
