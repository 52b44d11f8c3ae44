"""kind e2e fixtures: refuse foreign contexts, create or reuse the cluster, build and load images.

Knobs (env): SENSORLOG_E2E_REUSE=1 keeps the cluster afterwards; SENSORLOG_E2E_SKIP_BUILD=1
uses images already loaded (TAG must name them); ENGINE=docker|podman for hack/images.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "sensorlog"
CONTEXT = f"kind-{CLUSTER}"
NAMESPACE = "sensorlog-e2e"
RELEASE = "sensorlog"
TOOLS = ROOT / ".tools" / "bin"


def tool(name: str) -> str | None:
    local = TOOLS / name
    return str(local) if local.is_file() else shutil.which(name)


def run(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def check_context(context: str) -> None:
    """Refuse any kube context not named for this project (never touch someone's cluster)."""
    if context != CONTEXT:
        raise RuntimeError(f"refusing to run against kube context {context!r}: only {CONTEXT!r}")


def _engine_ready() -> str | None:
    for engine in ("docker", "podman"):
        exe = shutil.which(engine)
        if exe and subprocess.run([exe, "info"], capture_output=True).returncode == 0:
            return engine
    return None


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    found = {n: tool(n) for n in ("kind", "kubectl", "helm")}
    missing = [n for n, p in found.items() if p is None]
    engine = _engine_ready()
    if engine is None or "kind" in missing:
        pytest.skip(
            "kind e2e needs a running docker (or podman) and kind "
            "(go install sigs.k8s.io/kind@v0.33.0); "
            f"engine: {engine or 'none answering'}, missing: {missing or 'nothing'}"
        )
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run `make tools`")
    return {**{n: p for n, p in found.items() if p}, "engine": engine}


@pytest.fixture(scope="session")
def cluster(tools: dict[str, str]) -> Iterator[str]:
    """The kind cluster named sensorlog (created if absent); yields its kubeconfig context."""
    names = run(tools["kind"], "get", "clusters").stdout.split()
    created = CLUSTER not in names
    if created:
        run(
            tools["kind"],
            "create",
            "cluster",
            "--config",
            str(ROOT / "kind-config.yaml"),
            "--wait",
            "180s",
            timeout=900,
        )
    context = run(tools["kubectl"], "config", "current-context", check=False).stdout.strip()
    # Never touch a cluster that is not this project's, whatever the kubeconfig says.
    if context != CONTEXT:
        run(tools["kubectl"], "config", "use-context", CONTEXT)
    check_context(run(tools["kubectl"], "config", "current-context").stdout.strip())
    try:
        yield CONTEXT
    finally:
        if created and not os.environ.get("SENSORLOG_E2E_REUSE"):
            run(tools["kind"], "delete", "cluster", "--name", CLUSTER, timeout=300, check=False)


@pytest.fixture(scope="session")
def image_tag(tools: dict[str, str], cluster: str) -> str:
    tag = os.environ.get("TAG", "e2e")
    if not os.environ.get("SENSORLOG_E2E_SKIP_BUILD"):
        env = {**os.environ, "TAG": tag, "KIND_CLUSTER": CLUSTER, "ENGINE": tools["engine"]}
        r = subprocess.run(
            [str(ROOT / "hack" / "images.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert r.returncode == 0, r.stderr[-3000:]
    return tag


def kubectl(tools: dict[str, str], *args: str, timeout: float = 300) -> str:
    check_context(CONTEXT)
    return run(
        tools["kubectl"], "--context", CONTEXT, "-n", NAMESPACE, *args, timeout=timeout
    ).stdout
