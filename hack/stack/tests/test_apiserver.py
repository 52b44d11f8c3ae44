"""The envtest control plane is a real API server: CEL, RBAC, TokenRequest, helm."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from sensorlog_stack import apiserver
from sensorlog_stack.apiserver import HELM, HELM3, ControlPlane, missing_binaries
from sensorlog_stack.proc import StackError

integration = pytest.mark.integration

CRD = textwrap.dedent(
    """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.test.sensorlog.dev
    spec:
      group: test.sensorlog.dev
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                required: [minReplicas, maxReplicas]
                properties:
                  minReplicas: {type: integer, minimum: 0}
                  maxReplicas: {type: integer}
                  mode: {type: string, default: fast}
                x-kubernetes-validations:
                - rule: self.minReplicas <= self.maxReplicas
                  message: minReplicas must not exceed maxReplicas
    """
)


def widget(name: str, lo: int, hi: int) -> str:
    return json.dumps(
        {
            "apiVersion": "test.sensorlog.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"minReplicas": lo, "maxReplicas": hi},
        }
    )


def test_missing_binaries_name_make_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apiserver, "KUBE_APISERVER", tmp_path / "kube-apiserver")
    with pytest.raises(StackError, match="make tools"):
        ControlPlane(tmp_path)


@integration
def test_server_is_ready_and_reports_its_release(control_plane: ControlPlane) -> None:
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["serverVersion"]["gitVersion"] != "v0.0.0-master+$Format:%H$"
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json").stdout)
    assert "system:masters" in whoami["status"]["userInfo"]["groups"]


@integration
def test_crd_cel_rule_is_enforced_by_the_server(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=CRD)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.test.sensorlog.dev", "--timeout=30s"
    )

    control_plane.kubectl("apply", "-f", "-", stdin=widget("good", 1, 3))
    stored = json.loads(control_plane.kubectl("get", "widget", "good", "-o", "json").stdout)
    assert stored["spec"]["mode"] == "fast"  # schema default applied by the server

    bad = control_plane.kubectl("apply", "-f", "-", stdin=widget("bad", 5, 2), check=False)
    assert bad.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in bad.stderr
    negative = control_plane.kubectl("apply", "-f", "-", stdin=widget("neg", -1, 2), check=False)
    assert negative.returncode != 0
    assert "should be greater than or equal to 0" in negative.stderr
    missing = control_plane.kubectl("get", "widget", "bad", check=False)
    assert "NotFound" in missing.stderr


RBAC = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Namespace
    metadata: {name: rbac-test}
    ---
    apiVersion: v1
    kind: ServiceAccount
    metadata: {name: reader, namespace: rbac-test}
    ---
    apiVersion: rbac.authorization.k8s.io/v1
    kind: Role
    metadata: {name: configmap-reader, namespace: rbac-test}
    rules:
    - apiGroups: [""]
      resources: [configmaps]
      verbs: [get, list, watch]
    ---
    apiVersion: rbac.authorization.k8s.io/v1
    kind: RoleBinding
    metadata: {name: reader, namespace: rbac-test}
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}
    subjects:
    - {kind: ServiceAccount, name: reader, namespace: rbac-test}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: visible, namespace: rbac-test}
    data: {k: v}
    """
)


@integration
def test_service_account_gets_what_its_role_grants_and_no_more(
    control_plane: ControlPlane,
) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=RBAC)
    sa = "system:serviceaccount:rbac-test:reader"

    def can_i(*args: str) -> str:
        r = control_plane.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
        return r.stdout.strip()

    assert can_i("list", "configmaps", "-n", "rbac-test") == "yes"
    assert can_i("create", "configmaps", "-n", "rbac-test") == "no"
    assert can_i("get", "secrets", "-n", "rbac-test") == "no"
    assert can_i("list", "configmaps", "-n", "default") == "no"

    kubeconfig = control_plane.service_account_kubeconfig("rbac-test", "reader")
    whoami = json.loads(
        control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout
    )
    assert whoami["status"]["userInfo"]["username"] == sa

    got = control_plane.kubectl("get", "configmap", "visible", "-o", "json", kubeconfig=kubeconfig)
    assert json.loads(got.stdout)["data"] == {"k": "v"}
    for refused in (
        ("get", "secrets"),
        ("create", "configmap", "sneaky", "--from-literal=a=b"),
        ("get", "configmaps", "-n", "default"),
    ):
        r = control_plane.kubectl(*refused, kubeconfig=kubeconfig, check=False)
        assert r.returncode != 0, refused
        assert "Forbidden" in r.stderr or "forbidden" in r.stderr, r.stderr


def make_chart(root: Path) -> Path:
    chart = root / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: {{ .Release.Name }}-greeting
            data:
              greeting: {{ .Values.greeting | quote }}
            """
        )
    )
    return chart


@integration
@pytest.mark.parametrize("helm", [HELM, HELM3], ids=["helm4", "helm3"])
def test_helm_install_stores_a_release(
    control_plane: ControlPlane, tmp_path: Path, helm: Path
) -> None:
    if not helm.is_file():
        pytest.skip(f"{helm} not installed: run `make tools`")
    chart = make_chart(tmp_path)
    ns = f"helm-{helm.name}"
    env = {
        **os.environ,
        **control_plane.env(),
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
    }
    r = subprocess.run(
        [
            str(helm),
            "install",
            "demo",
            str(chart),
            "--namespace",
            ns,
            "--create-namespace",
            "--set",
            "greeting=hi",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    cm = json.loads(
        control_plane.kubectl("get", "configmap", "demo-greeting", "-n", ns, "-o", "json").stdout
    )
    assert cm["data"] == {"greeting": "hi"}
    releases = subprocess.run(
        [str(helm), "list", "--namespace", ns, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [release] = json.loads(releases.stdout)
    assert release["status"] == "deployed"
    # The release record itself lives in the API server (helm's Secret driver).
    secrets = control_plane.kubectl("get", "secrets", "-n", ns, "-l", "owner=helm", "-o", "name")
    assert "sh.helm.release.v1.demo.v1" in secrets.stdout


@integration
def test_stop_leaves_no_process(tmp_path: Path) -> None:
    if missing_binaries():
        pytest.skip("Kubernetes control plane not installed: run `make tools`")
    cp = ControlPlane(tmp_path / "cp").start()
    pids = cp.pids()
    assert len(pids) == 2
    cp.stop()
    assert cp.pids() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    leftovers = [
        p.name for p in Path("/proc").iterdir() if p.name.isdigit() and str(tmp_path) in _cmdline(p)
    ]
    assert leftovers == []


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
