"""Run the built sensorlog images against real local servers (called by hack/images_check.sh).

Starts PostgreSQL 15, Apache Kafka and a Kubernetes control plane (etcd +
kube-apiserver) on 127.0.0.1 with the project's launchers, then runs each image
with podman: host networking, ``--read-only``, as the image's own numeric UID.

Checks, one PASS/FAIL line each:
  migrate   ``sensorlog-migrate`` (writer image) exits 0 against the PostgreSQL;
  writer    ``/readyz`` answers 200 (Kafka + PostgreSQL reached);
  query     ``grpc.health.v1`` answers SERVING on the gRPC port;
  operator  ``/healthz`` answers 200 (kopf watching the kube-apiserver, CRD applied);
and for every running container: ``id -u`` is not 0, PID 1 runs as the image's
UID, ``/`` is mounted read-only, and the image's own HEALTHCHECK passes.

Every container carries the label ``sensorlog.images-check=<run id>`` and is
removed on exit, as is every server this started. Not a pytest module on purpose:
it needs podman and built images, so it stays out of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sensorlog_stack.apiserver import ControlPlane
from sensorlog_stack.kafka import Kafka, create_topics
from sensorlog_stack.postgres import Postgres
from sensorlog_stack.proc import ROOT, free_port

TOPICS = {"logger.sensor.ts": 2, "logger.sensor.instance": 1}
TOPICS.update({f"{t}.dlq": 1 for t in list(TOPICS)})
CRDS = ROOT / "operator" / "crds"
KUBECONFIG_IN = "/etc/sensorlog/kubeconfig"


def say(line: str) -> None:
    """One line to the person running the check (stdout, flushed: the shell tees it)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Checker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.engine = [args.engine, "--runtime", args.runtime]
        self.run_id = args.run_id
        self.prefix = args.repo_prefix
        self.tag = args.tag
        self.timeout = args.timeout
        self.results: list[tuple[str, bool, str]] = []
        self.containers: list[str] = []

    # -- helpers --------------------------------------------------------------

    def record(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append((name, ok, detail))
        say(f"{'PASS' if ok else 'FAIL'}  {name:<26} {detail}")
        return ok

    def podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.engine, *args], capture_output=True, text=True, check=False, timeout=timeout
        )

    def image(self, name: str) -> str:
        return f"{self.prefix}{name}:{self.tag}"

    def image_user(self, image: str) -> str:
        r = self.podman("image", "inspect", "--format", "{{.Config.User}}", image)
        if r.returncode != 0:
            raise RuntimeError(f"image {image} not found: {r.stderr.strip()}")
        return r.stdout.strip()

    def run_args(
        self, name: str, image: str, env: dict[str, str], mounts: list[str] | None = None
    ) -> list[str]:
        user = self.image_user(image)
        cname = f"sensorlog-check-{name}-{self.run_id}"
        self.containers.append(cname)
        args = [
            "run",
            f"--name={cname}",
            "--network=host",
            "--read-only",
            f"--user={user}",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
            "--ulimit=nofile=10000:10000",
            "--ulimit=nproc=32768:32768",
            f"--label=sensorlog.images-check={self.run_id}",
            # No systemd here to time the HEALTHCHECK; check_healthcheck runs it by hand.
            "--health-interval=disable",
        ]
        for k, v in env.items():
            args.append(f"--env={k}={v}")
        for m in mounts or []:
            args.append(f"--volume={m}")
        return args

    def start(
        self, name: str, image: str, env: dict[str, str], mounts: list[str] | None = None
    ) -> str:
        r = self.podman(*self.run_args(name, image, env, mounts), "--detach", image)
        if r.returncode != 0:
            raise RuntimeError(f"podman run {name} failed: {r.stderr.strip()}")
        return self.containers[-1]

    def logs(self, cname: str) -> str:
        r = self.podman("logs", "--tail", "15", cname)
        return (r.stdout + r.stderr).strip()

    def running(self, cname: str) -> bool:
        r = self.podman("inspect", "--format", "{{.State.Running}}", cname)
        return r.stdout.strip() == "true"

    def wait_for(self, cname: str, probe: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
        deadline = time.monotonic() + self.timeout
        last = "no answer"
        while time.monotonic() < deadline:
            ok, last = probe()
            if ok:
                return True, last
            if not self.running(cname):
                return False, f"container exited: {last}\n{self.logs(cname)}"
            time.sleep(0.5)
        return False, f"no success within {self.timeout:.0f}s: {last}\n{self.logs(cname)}"

    def check_identity(self, name: str, cname: str, image: str) -> None:
        """``id -u`` not 0, PID 1 as the image's UID, root filesystem read-only."""
        want = self.image_user(image).split(":")[0]
        r = self.podman("exec", cname, "id", "-u")
        uid = r.stdout.strip()
        self.record(
            f"{name}: non-root",
            r.returncode == 0 and uid.isdigit() and uid != "0" and uid == want,
            f"id -u = {uid or r.stderr.strip()} (image USER {want})",
        )
        script = (
            "import os\n"
            "pid1=[l.split()[1] for l in open('/proc/1/status') if l.startswith('Uid:')][0]\n"
            "root=[l.split() for l in open('/proc/self/mountinfo') if l.split()[4]=='/'][0]\n"
            "print(pid1, root[5].split(',')[0])\n"
            "try:\n open('/.images-check-probe','w')\nexcept OSError as e:\n print(e.strerror)\n"
            "else:\n print('writable')\n"
        )
        r = self.podman("exec", cname, "python", "-c", script)
        lines = r.stdout.split("\n")
        pid1, root_opt = [*lines[0].split(), "?", "?"][:2] if lines else ("?", "?")
        write = lines[1].strip() if len(lines) > 1 else r.stderr.strip()
        self.record(
            f"{name}: read-only rootfs",
            r.returncode == 0 and pid1 == want and root_opt == "ro" and write != "writable",
            f"PID 1 uid {pid1}, / mounted {root_opt}, write to / -> {write}",
        )

    def check_healthcheck(self, name: str, cname: str) -> None:
        """The image's own HEALTHCHECK command, run inside the container."""
        deadline = time.monotonic() + 30
        while True:
            r = self.podman("healthcheck", "run", cname, timeout=60)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        out = (r.stdout + r.stderr).strip() or "healthy"
        self.record(f"{name}: image HEALTHCHECK", r.returncode == 0, out.splitlines()[-1])

    # -- the checks -----------------------------------------------------------

    def migrate(self, dsn: str) -> None:
        image = self.image("writer")
        env = {"SENSORLOG_MIGRATE_DATABASE_DSN": dsn, "SENSORLOG_MIGRATE_LOG_FORMAT": "text"}
        args = [*self.run_args("migrate", image, env), "--rm", "--no-healthcheck"]
        r = self.podman(
            *args, "--entrypoint=sensorlog-migrate", image, timeout=max(60.0, self.timeout)
        )
        # The container's own lines, not podman's (time="..." level=...).
        out = (r.stdout + r.stderr).strip().splitlines()
        tail = [line for line in out if not line.startswith("time=")]
        self.record(
            "migrate: exit 0",
            r.returncode == 0,
            f"exit {r.returncode}: {tail[-1] if tail else ''}",
        )

    def writer(self, dsn: str, bootstrap: str) -> None:
        image, port = self.image("writer"), free_port()
        cname = self.start(
            "writer",
            image,
            {
                "SENSORLOG_WRITER_DATABASE_DSN": dsn,
                "SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "SENSORLOG_WRITER_METRICS_HOST": "127.0.0.1",
                "SENSORLOG_WRITER_METRICS_PORT": str(port),
                "SENSORLOG_WRITER_LOG_FORMAT": "text",
            },
        )
        ok, detail = self.wait_for(cname, lambda: http_ok(f"http://127.0.0.1:{port}/readyz"))
        self.record("writer: /readyz 200", ok, detail)
        self.check_identity("writer", cname, image)
        self.check_healthcheck("writer", cname)

    def query(self, dsn: str) -> None:
        image, port, metrics = self.image("query"), free_port(), free_port()
        cname = self.start(
            "query",
            image,
            {
                "SENSORLOG_QUERY_DATABASE_DSN": dsn,
                "SENSORLOG_QUERY_GRPC_HOST": "127.0.0.1",
                "SENSORLOG_QUERY_GRPC_PORT": str(port),
                "SENSORLOG_QUERY_METRICS_HOST": "127.0.0.1",
                "SENSORLOG_QUERY_METRICS_PORT": str(metrics),
                "SENSORLOG_QUERY_LOG_FORMAT": "text",
            },
        )
        ok, detail = self.wait_for(cname, lambda: grpc_serving(f"127.0.0.1:{port}"))
        self.record("query: gRPC health SERVING", ok, detail)
        self.check_identity("query", cname, image)
        self.check_healthcheck("query", cname)

    def operator(self, cp: ControlPlane, work: Path) -> None:
        image, port = self.image("operator"), free_port()
        for crd in sorted(CRDS.glob("*.yaml")):
            cp.kubectl("apply", "--server-side", "-f", str(crd))
            cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd))
        # The admin kubeconfig is 0600 root; the container's user must read its copy.
        uid, _, gid = self.image_user(image).partition(":")
        kubeconfig = work / "operator-kubeconfig"
        shutil.copyfile(cp.kubeconfig, kubeconfig)
        os.chown(kubeconfig, int(uid), int(gid or uid))
        kubeconfig.chmod(0o400)
        cname = self.start(
            "operator",
            image,
            {
                "KUBECONFIG": KUBECONFIG_IN,
                "SENSORLOG_OPERATOR_METRICS_HOST": "127.0.0.1",
                "SENSORLOG_OPERATOR_METRICS_PORT": str(port),
                "SENSORLOG_OPERATOR_LOG_FORMAT": "text",
            },
            [f"{kubeconfig}:{KUBECONFIG_IN}:ro"],
        )
        ok, detail = self.wait_for(cname, lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
        self.record("operator: /healthz 200", ok, detail)
        ok, detail = self.wait_for(cname, lambda: http_ok(f"http://127.0.0.1:{port}/readyz"))
        self.record("operator: /readyz 200", ok, detail)
        self.check_identity("operator", cname, image)
        self.check_healthcheck("operator", cname)

    def cleanup(self) -> None:
        for cname in self.containers:
            self.podman("rm", "--force", "--time=5", "--ignore", cname, timeout=60)
        # Anything else this run labelled (a name clash, an interrupted start).
        r = self.podman("ps", "-aq", "--filter", f"label=sensorlog.images-check={self.run_id}")
        for cid in r.stdout.split():
            self.podman("rm", "--force", "--time=5", "--ignore", cid, timeout=60)


def http_ok(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            body = r.read(200).decode(errors="replace").strip()
            return r.status == 200, f"{url} -> {r.status} {body}"
    except urllib.error.HTTPError as e:
        return False, f"{url} -> {e.code} {e.read(200).decode(errors='replace').strip()}"
    except OSError as e:
        return False, f"{url} -> {e}"


def grpc_serving(target: str) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as e:
            return False, f"{target} -> {e.code().name}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        return resp.status == health_pb2.HealthCheckResponse.SERVING, f"{target} -> {status}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", default="podman")
    p.add_argument("--runtime", default=os.environ.get("PODMAN_RUNTIME", "runc"))
    p.add_argument("--repo-prefix", default=os.environ.get("REPO_PREFIX", "sensorlog/"))
    p.add_argument("--tag", required=True)
    p.add_argument("--run-id", default=str(os.getpid()))
    p.add_argument("--timeout", type=float, default=90.0, help="seconds per readiness wait")
    p.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    args = p.parse_args()

    def on_term(signum: int, _frame: object) -> None:
        # The shell wrapper (and `timeout`) stop the driver with SIGTERM: unwind
        # through the finally-block so containers and servers go away too.
        # Once: a second signal must not cut the cleanup short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    checker = Checker(args)
    work = Path(tempfile.mkdtemp(prefix="sensorlog-images-check-"))
    servers: list[Postgres | Kafka | ControlPlane] = []
    try:
        say(f"images-check: servers in {work}")
        pg = Postgres(work / "postgres")
        servers.append(pg)
        pg.start()
        kafka = Kafka(work / "kafka", partitions=2)
        servers.append(kafka)
        kafka.start()
        asyncio.run(create_topics(kafka.bootstrap, TOPICS))
        cp = ControlPlane(work / "kube")
        servers.append(cp)
        cp.start()
        say(f"images-check: PostgreSQL {pg.dsn}, Kafka {kafka.bootstrap}")
        say(f"images-check: kube-apiserver {cp.server}")
        checks: list[tuple[str, Callable[[], None]]] = [
            ("migrate", lambda: checker.migrate(pg.dsn)),
            ("writer", lambda: checker.writer(pg.dsn, kafka.bootstrap)),
            ("query", lambda: checker.query(pg.dsn)),
            ("operator", lambda: checker.operator(cp, work)),
        ]
        for name, check in checks:
            try:
                check()
            except Exception as exc:  # one image's failure must not hide the others'
                checker.record(name, False, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # reported as a failed check; cleanup follows
        checker.record("driver", False, f"{type(exc).__name__}: {exc}")
    finally:
        checker.cleanup()
        for s in reversed(servers):
            s.stop()
        if args.keep:
            say(f"images-check: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [n for n, ok, _ in checker.results if not ok]
    summary = {"checks": len(checker.results), "failed": failed}
    say(f"images-check: {json.dumps(summary)}")
    return 1 if failed or not checker.results else 0


if __name__ == "__main__":
    sys.exit(main())
