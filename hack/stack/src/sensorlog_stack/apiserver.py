"""A real Kubernetes control plane (etcd + kube-apiserver, no kubelet) on 127.0.0.1.

envtest style: CRD structural schemas and CEL rules, defaulting, RBAC,
TokenRequest, server-side apply and helm's release storage are all the real
thing. Nothing else runs: no controller-manager (so no garbage collection, no
namespace finalization, no ``default`` ServiceAccount per namespace) and no
kubelet (pods never start). Binaries come from ``make tools``
(hack/tools/envtest.sh and hack/tools/helm.sh).

Certificates are made with the ``openssl`` CLI so this needs no Python crypto
package. The admin identity is a client certificate in group system:masters.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from sensorlog_stack.proc import TOOLS, Process, StackError, free_port, wait_until

BIN = TOOLS / "bin"
KUBE_APISERVER = BIN / "kube-apiserver"
ETCD = BIN / "etcd"
KUBECTL = BIN / "kubectl"
HELM = BIN / "helm"
HELM3 = BIN / "helm3"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "sensorlog-admin"
START_TIMEOUT = 90.0


def missing_binaries(*, helm: bool = False) -> list[Path]:
    """The control-plane binaries (and helm when asked) not installed yet."""
    wanted = [ETCD, KUBE_APISERVER, KUBECTL, *([HELM, HELM3] if helm else [])]
    return [p for p in wanted if not p.is_file()]


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise StackError(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()}")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ControlPlane:
    """etcd + kube-apiserver in ``base_dir``; ``start()`` returns once /readyz is ok."""

    def __init__(self, base_dir: Path) -> None:
        missing = missing_binaries()
        if missing:
            raise StackError(
                "Kubernetes control-plane binaries missing: "
                + ", ".join(str(p) for p in missing)
                + " - run `make tools` (hack/tools/envtest.sh and hack/tools/helm.sh)"
            )
        if shutil.which("openssl") is None:
            raise StackError("openssl CLI not found: apt-get install openssl")
        self.base_dir = base_dir
        self.pki = base_dir / "pki"
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self._etcd: Process | None = None
        self._apiserver: Process | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- public API -----------------------------------------------------------

    @property
    def server(self) -> str:
        """The API server URL, e.g. ``https://127.0.0.1:PORT``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (group system:masters): may do anything."""
        return self.base_dir / "kubeconfig"

    @property
    def ca_cert(self) -> Path:
        """CA that signed the serving certificate (and the admin client cert)."""
        return self.pki / "ca.crt"

    def start(self) -> ControlPlane:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._make_pki()
        try:
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig(
                self.kubeconfig,
                ADMIN_USER,
                {
                    "client-certificate-data": _b64(self.pki / "admin.crt"),
                    "client-key-data": _b64(self.pki / "admin.key"),
                },
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; both process groups are killed."""
        if self._apiserver is not None:
            self._apiserver.stop()
            self._apiserver = None
        if self._etcd is not None:
            self._etcd.stop()
            self._etcd = None

    def pids(self) -> list[int]:
        """PIDs of the running control-plane processes (for leak checks)."""
        return [p.pid for p in (self._etcd, self._apiserver) if p is not None and p.alive()]

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """Environment variables that point kubectl/helm/kopf at this server."""
        return {"KUBECONFIG": str(kubeconfig or self.kubeconfig)}

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server (admin unless ``kubeconfig`` is given)."""
        r = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise StackError(
                f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}"
            )
        return r

    def service_account_kubeconfig(self, namespace: str, name: str, duration: str = "24h") -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name``.

        The token comes from the TokenRequest API, so it is a real bound token
        that RBAC judges exactly as in a cluster. The ServiceAccount must exist.
        """
        token = self.kubectl(
            "create", "token", name, "--namespace", namespace, f"--duration={duration}"
        ).stdout.strip()
        if not token:
            raise StackError(f"TokenRequest for {namespace}/{name} returned no token")
        path = self.base_dir / f"kubeconfig-sa-{namespace}-{name}"
        user = f"system:serviceaccount:{namespace}:{name}"
        self._write_kubeconfig(path, user, {"token": token}, namespace=namespace)
        return path

    # -- internals ------------------------------------------------------------

    def _make_pki(self) -> None:
        pki = self.pki
        if (pki / "admin.crt").exists():
            return
        pki.mkdir(parents=True, exist_ok=True)
        curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl(
            "req",
            "-x509",
            *curve,
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=sensorlog-envtest-ca",
            cwd=pki,
        )
        (pki / "serving.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local\n"
        )
        (pki / "client.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n"
        )
        for stem, subj, ext in [
            ("serving", "/CN=kube-apiserver", "serving.ext"),
            # O=system:masters: bound to cluster-admin by RBAC's bootstrap policy.
            ("admin", f"/O=system:masters/CN={ADMIN_USER}", "client.ext"),
        ]:
            _openssl(
                "req",
                "-new",
                *curve,
                "-keyout",
                f"{stem}.key",
                "-out",
                f"{stem}.csr",
                "-subj",
                subj,
                cwd=pki,
            )
            _openssl(
                "x509",
                "-req",
                "-in",
                f"{stem}.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                ext,
                "-out",
                f"{stem}.crt",
                cwd=pki,
            )
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
        _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [
            str(ETCD),
            "--name",
            "envtest",
            "--data-dir",
            str(self.base_dir / "etcd"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"envtest={peer}",
            # Test data: losing it on a crash is fine, fsync latency is not.
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ]
        log = self.base_dir / "etcd.log"
        self._etcd = Process("etcd", argv, log, cwd=self.base_dir)
        wait_until(self._etcd_ready, START_TIMEOUT, f"etcd on {client}", log)

    def _etcd_ready(self) -> bool:
        assert self._etcd is not None
        if not self._etcd.alive():
            raise StackError(f"etcd exited; see {self._etcd.log}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.etcd_port}/health", timeout=1
            ) as r:
                return bool(json.load(r).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _start_apiserver(self) -> None:
        pki = self.pki
        argv = [
            str(KUBE_APISERVER),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # No controller-manager runs to reconcile the kubernetes Service's
            # endpoints, and 127.0.0.1 is no address a Service may point at.
            "--endpoint-reconciler-type=none",
            "--v=1",
        ]
        log = self.base_dir / "kube-apiserver.log"
        self._apiserver = Process("kube-apiserver", argv, log, cwd=self.base_dir)
        wait_until(self._apiserver_ready, START_TIMEOUT, f"kube-apiserver on {self.server}", log)

    def _client_ssl(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_cert))
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            self._ssl = ctx
        return self._ssl

    def _apiserver_ready(self) -> bool:
        assert self._apiserver is not None
        if not self._apiserver.alive():
            raise StackError(f"kube-apiserver exited; see {self._apiserver.log}")
        try:
            with urllib.request.urlopen(
                f"{self.server}/readyz", timeout=2, context=self._client_ssl()
            ) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _write_kubeconfig(
        self, path: Path, user: str, credentials: dict[str, str], namespace: str = "default"
    ) -> None:
        # JSON is YAML: kubectl, helm and the Python client all read it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "envtest",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca_cert),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [
                {
                    "name": "envtest",
                    "context": {"cluster": "envtest", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "envtest",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
