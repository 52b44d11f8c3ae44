"""Throwaway X.509 material for TLS tests, made with the ``openssl`` CLI.

A test builds its own CA, then server and client certificates signed by it; a
second, unrelated CA proves that an untrusted certificate is refused. Keys are
unencrypted PKCS#8 PEM (what Kafka's PEM keystores, PostgreSQL, gRPC and
Python's ssl module all read) and stay in the test's temp directory.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sensorlog_stack.proc import StackError

DAYS = "2"


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise StackError("openssl not found (apt-get install openssl)")
    r = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if r.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {r.stderr.strip()[-1000:]}")


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CA:
    cert: Path
    key: Path
    dir: Path

    def issue(
        self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), client: bool = False
    ) -> Pair:
        """A leaf certificate for ``hosts`` (IPs and DNS names) signed by this CA."""
        key, csr, cert = (self.dir / f"{name}{ext}" for ext in (".key", ".csr", ".crt"))
        ext = self.dir / f"{name}.ext"
        san = ",".join(
            f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
        )
        usage = "clientAuth" if client else "serverAuth,clientAuth"
        ext.write_text(
            f"subjectAltName={san}\nextendedKeyUsage={usage}\n"
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        )
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-subj",
            f"/CN={name}",
            "-out",
            str(csr),
            cwd=self.dir,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(self.cert),
            "-CAkey",
            str(self.key),
            "-CAcreateserial",
            "-days",
            DAYS,
            "-extfile",
            str(ext),
            "-out",
            str(cert),
            cwd=self.dir,
        )
        key.chmod(0o600)
        return Pair(cert, key)


def make_ca(directory: Path, name: str = "sensorlog-test-ca") -> CA:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-subj",
        f"/CN={name}",
        "-days",
        DAYS,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        str(cert),
        cwd=directory,
    )
    key.chmod(0o600)
    return CA(cert, key, directory)
