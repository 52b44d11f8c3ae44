"""The chart's security switches: secrets only as secretKeyRef or mounted files, TLS
paths the processes accept, kubelet probes off the TLS port, token-less workers, and
NetworkPolicies that restrict egress to each component's needs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sensorlog_core.migrate import MigrateSettings
from sensorlog_query.settings import QuerySettings
from sensorlog_writer.settings import WriterSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sensorlog"
HELM = ROOT / ".tools" / "bin" / "helm"
SECURED = [
    "kafka.enabled=false",
    "externalKafka.bootstrapServers=kafka-0.kafka:9093",
    "kafkaSecurity.protocol=SASL_SSL",
    "kafkaSecurity.saslUsername=sensorlog-writer",
    "kafkaSecurity.saslPasswordSecret.name=kafka-writer",
    "kafkaSecurity.caSecret.name=kafka-ca",
    "kafkaSecurity.clientCertSecret=kafka-writer-tls",
    "database.sslmode=verify-full",
    "database.caSecret.name=db-ca",
    "query.tls.secret=query-tls",
    "query.tls.clientCaSecret=query-client-ca",
    "networkPolicy.enabled=true",
]
SETTINGS = {
    "SENSORLOG_WRITER_": WriterSettings,
    "SENSORLOG_QUERY_": QuerySettings,
    "SENSORLOG_MIGRATE_": MigrateSettings,
}


def helm(*sets: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        pytest.skip("helm not installed: run `make tools` (hack/tools/helm.sh)")
    args = [str(HELM), "template", "s", str(CHART), "-n", "s"]
    for s in sets:
        args += ["--set", s]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def render(*sets: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(helm(*sets).stdout) if d]


def pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def test_secured_values_give_mounted_files_and_secret_refs_the_processes_know() -> None:
    docs = render(*SECURED)
    seen = set()
    for where, spec in pods(docs).items():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            env = {e["name"]: e for e in c.get("env", [])}
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for name, e in env.items():
                prefix = next((p for p in SETTINGS if name.startswith(p)), None)
                if prefix is None:
                    continue
                seen.add(prefix)
                field = name.removeprefix(prefix).lower()
                assert field in SETTINGS[prefix].model_fields, f"{where}: {name}"
                if "PASSWORD" in name or name.endswith("_DSN"):
                    assert "secretKeyRef" in e["valueFrom"], f"{where}: {name} inline"
                if name.endswith("_FILE"):
                    # Each file lives on a read-only mount of a Secret volume.
                    mount = mounts[str(Path(e["value"]).parent)]
                    assert mount["readOnly"] is True
                    assert "secret" in volumes[mount["name"]], f"{where}: {name}"
    assert seen == set(SETTINGS)
    writer = next(s for w, s in pods(docs).items() if w.endswith("-writer"))
    env = {e["name"]: e for e in writer["containers"][0]["env"]}
    assert env["SENSORLOG_WRITER_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-writer",
        "key": "password",
    }
    assert env["SENSORLOG_WRITER_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["SENSORLOG_WRITER_DATABASE_SSLMODE"]["value"] == "verify-full"


def test_query_tls_moves_kubelet_probes_to_the_plaintext_health_port() -> None:
    query = next(s for w, s in pods(render(*SECURED)).items() if w.endswith("-query"))
    c = query["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    health = int(env["SENSORLOG_QUERY_GRPC_HEALTH_PORT"])
    assert c["readinessProbe"]["grpc"]["port"] == health
    assert c["livenessProbe"]["grpc"]["port"] == health
    assert {"name": "grpc-health", "containerPort": health} in c["ports"]
    assert env["SENSORLOG_QUERY_GRPC_TLS_CLIENT_CA_FILE"].endswith("ca.crt")


def test_workers_have_no_token_and_no_rbac() -> None:
    docs = render(*SECURED)
    for where, spec in pods(docs).items():
        # The sensorlog workers (the operator has its own, RBAC-bound account).
        if "/s-sensorlog-" not in where or where.endswith("-operator"):
            continue
        assert spec["automountServiceAccountToken"] is False, where
        sa = spec["serviceAccountName"]
        account = next(
            d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == sa
        )
        assert account["automountServiceAccountToken"] is False
        bound = [
            d
            for d in docs
            if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
            and any(s.get("name") == sa for s in d.get("subjects", []))
        ]
        assert not bound, f"{where}: {sa} is bound to {bound}"


def test_network_policies_restrict_egress_to_each_components_needs() -> None:
    docs = render("networkPolicy.enabled=true")
    policies = {
        d["metadata"]["name"].removeprefix("s-sensorlog-"): d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }
    ports = {
        name: {p["port"] for rule in spec.get("egress", []) for p in rule.get("ports", [])}
        for name, spec in policies.items()
    }
    for name in ("query", "writer", "operator", "migrate", "topics"):
        assert "Egress" in policies[name]["policyTypes"], name
        assert 53 in ports[name]
    assert 9092 in ports["writer"] and 5432 in ports["writer"]
    assert 9092 not in ports["query"] and 5432 in ports["query"]
    assert 5432 not in ports["topics"] and 9092 in ports["topics"]
    assert 443 in ports["operator"] and 443 not in ports["writer"]


@pytest.mark.parametrize(
    "sets, message",
    [
        (["kafkaSecurity.protocol=SASL_SSL"], "needs kafkaSecurity.saslUsername"),
        (["kafkaSecurity.caSecret.name=ca"], "need kafkaSecurity.protocol SSL or SASL_SSL"),
        (["database.sslmode=verify-full"], "needs database.caSecret.name"),
        (["query.tls.clientCaSecret=ca"], "needs query.tls.secret"),
    ],
)
def test_incomplete_security_values_fail_rendering(sets: list[str], message: str) -> None:
    r = helm(*sets, check=False)
    assert r.returncode != 0 and message in r.stderr, r.stderr
