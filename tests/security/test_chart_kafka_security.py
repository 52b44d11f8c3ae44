"""The bundled Kafka switched to SASL_SSL (`kafka.security.enabled`): broker config,
generated certificates and SCRAM passwords (kept on upgrade, proved on a real
kube-apiserver), clients wired automatically, nothing secret inline, and the generated
material accepted by a real Apache Kafka broker.

Pods never run here (no kubelet): the broker's start script is proved by rendering and
by matching the listener settings of the real-broker tests (sensorlog_stack.kafka)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sensorlog_stack.kafka import Kafka, KafkaTls, create_topics

from .test_kafka_security import dead_letters, publish

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sensorlog"
HELMS = {"helm4": ROOT / ".tools" / "bin" / "helm", "helm3": ROOT / ".tools" / "bin" / "helm3"}
K8S_VERSIONS = [f"1.{minor}.0" for minor in range(29, 38)]
ON = ["kafka.security.enabled=true"]


def helm(which: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = HELMS[which]
    if not binary.is_file():
        pytest.skip(f"{binary.name} not installed: run `make tools` (hack/tools/helm.sh)")
    r = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def sets(*values: str) -> list[str]:
    return [x for v in values for x in ("--set", v)]


def render(*values: str, which: str = "helm4") -> list[dict[str, Any]]:
    out = helm(which, "template", "s", str(CHART), "-n", "s", *sets(*values)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix))


def secret_data(doc: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}


def broker_properties(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The server.properties the broker's start script writes (its heredoc)."""
    c = find(docs, "StatefulSet", "-kafka")["spec"]["template"]["spec"]["containers"][0]
    script = c["command"][-1]
    body = re.search(r"<<EOF\n(.*?)\nEOF\n", script, re.S)
    assert body, script
    return dict(line.split("=", 1) for line in body.group(1).splitlines())


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("which", sorted(HELMS))
def test_lint_strict_and_kubernetes_schemas_129_to_137(which: str) -> None:
    values = [*ON, "kafka.replicas=3", "topics.replicationFactor=3"]
    helm(which, "lint", "--strict", str(CHART), *sets(*values))
    failures = []
    for doc in render(*values, which=which):
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                failures.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_broker_serves_sasl_ssl_scram_with_pem_stores_and_mtls_controllers() -> None:
    docs = render(*ON, "kafka.replicas=3", "topics.replicationFactor=3")
    props = broker_properties(docs)
    assert props["listeners"] == "SASL_SSL://:9092,CONTROLLER://:9093"
    assert props["advertised.listeners"] == "SASL_SSL://$POD_NAME.s-kafka-headless.s.svc:9092"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert "PLAINTEXT" not in props["listener.security.protocol.map"]
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert props["ssl.keystore.location"] == "$run/keystore.pem"
    assert props["ssl.truststore.location"] == "$tls/ca.crt"
    assert props["controller.quorum.voters"].count("s-kafka-headless.s.svc:9093") == 3
    # The inter-broker password comes from the environment (secretKeyRef), not the manifest.
    assert (
        'password="$INTER_BROKER_PASSWORD"'
        in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    )
    sts = find(docs, "StatefulSet", "-kafka")["spec"]["template"]["spec"]
    c = sts["containers"][0]
    script = c["command"][-1]
    assert "kafka-storage.sh format --ignore-formatted" in script
    assert script.count('--add-scram "SCRAM-SHA-512=[name=$') == 2
    env = {e["name"]: e for e in c["env"]}
    for name, key in (
        ("CLIENT_PASSWORD", "password"),
        ("INTER_BROKER_PASSWORD", "inter-broker-password"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "s-kafka-scram", "key": key}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["volumes"]}
    assert mounts["tls"]["mountPath"] == "/etc/kafka/tls" and mounts["tls"]["readOnly"] is True
    assert volumes["tls"]["secret"]["secretName"] == "s-kafka-tls"
    assert volumes["run"]["emptyDir"]["medium"] == "Memory"  # key store never on disk


def test_broker_settings_match_the_real_broker_tests(tmp_path: Path) -> None:
    """The SASL_SSL listener settings rendered for the pods are the ones the real-broker
    tests (tests/security/test_kafka_security.py) run Apache Kafka with; the documented
    differences are the listener set and the controller/inter-broker protocol."""
    pem = tmp_path / "x.pem"
    pem.write_text("")
    kafka = Kafka(tmp_path / "k", tls=KafkaTls(pem, pem, pem, {"u": "p"}))
    kafka.base_dir.mkdir()
    stack = kafka._tls_properties(kafka.tls)  # type: ignore[arg-type]
    chart = broker_properties(render(*ON))
    for key in (
        "ssl.keystore.type",
        "ssl.truststore.type",
        "sasl.enabled.mechanisms",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms",
        "listener.name.sasl_ssl.ssl.client.auth",
    ):
        assert chart[key] == stack[key], key
    # Same login module; the chart's adds the inter-broker user's own credentials.
    module = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    assert stack["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"].startswith(module)
    assert chart["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"].startswith(module)
    # Differences: the test broker keeps PLAINTEXT (admin, readiness) and a PLAINTEXT
    # controller; the chart serves nothing in plaintext.
    assert "PLAINTEXT" in stack["listener.security.protocol.map"]
    assert "PLAINTEXT" not in chart["listener.security.protocol.map"]


def test_generated_certificate_and_scram_secrets(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    docs = render(*ON, "kafka.replicas=3", "topics.replicationFactor=3")
    tls = find(docs, "Secret", "-kafka-tls")
    scram = find(docs, "Secret", "-kafka-scram")
    assert tls["type"] == "kubernetes.io/tls"
    data = secret_data(tls)
    assert data["tls.key"].startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, what Kafka reads
    assert "ca.key" not in data  # the CA's key is never stored
    passwords = secret_data(scram)
    assert len(passwords["password"]) == 32 and len(passwords["inter-broker-password"]) == 32
    assert passwords["password"] != passwords["inter-broker-password"]
    # Default persistence (Retain): the credentials survive uninstall with the data.
    assert scram["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    keep = find(render(*ON, "kafka.persistence.whenDeleted=Delete"), "Secret", "-kafka-scram")
    assert "annotations" not in keep["metadata"]

    def run(*args: str, stdin: str) -> str:
        r = subprocess.run([openssl, *args], input=stdin, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert run("pkey", "-pubout", stdin=data["tls.key"]) == run(
        "x509", "-noout", "-pubkey", stdin=data["tls.crt"]
    )
    text = run("x509", "-noout", "-text", stdin=data["tls.crt"])
    for name in (
        "s-kafka.s.svc",
        "s-kafka.s.svc.cluster.local",
        "s-kafka-headless.s.svc",
        *(f"s-kafka-{i}.s-kafka-headless.s.svc" for i in range(3)),
        "*.s-kafka-headless.s.svc",
    ):
        assert f"DNS:{name}," in text or text.rstrip().endswith(f"DNS:{name}"), name
    assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
    ca = tmp_path / "ca.crt"
    ca.write_text(data["ca.crt"])
    assert run("verify", "-CAfile", str(ca), stdin=data["tls.crt"]).strip() == "stdin: OK"


def test_clients_get_sasl_ssl_user_password_ref_and_ca_without_wiring() -> None:
    docs = render(*ON)
    for kind, suffix in (("Deployment", "-writer"), ("Job", "-topics")):
        pod = find(docs, kind, suffix)["spec"]["template"]["spec"]
        c = next(c for c in pod["containers"] if c["name"] in ("writer", "topics"))
        env = {e["name"]: e for e in c["env"]}
        prefix = "SENSORLOG_WRITER_KAFKA_" if kind == "Deployment" else ""
        assert env[f"{prefix}SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env[f"{prefix}SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env[f"{prefix}SASL_USERNAME"]["value"] == "sensorlog"
        assert env[f"{prefix}SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "s-kafka-scram",
            "key": "password",
        }
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["kafka-ca"]["secret"] == {
            "secretName": "s-kafka-tls",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],  # only the CA, not the broker key
        }
        assert {"name": "kafka-ca", "mountPath": "/etc/sensorlog/kafka-ca", "readOnly": True} in c[
            "volumeMounts"
        ]
        if prefix:
            assert env[f"{prefix}SSL_CA_FILE"]["value"] == "/etc/sensorlog/kafka-ca/ca.crt"


def test_existing_secrets_are_used_and_nothing_is_generated() -> None:
    docs = render(
        *ON,
        "kafka.security.tls.existingSecret=my-kafka-tls",
        "kafka.security.scram.existingSecret=my-kafka-scram",
        "kafka.security.scram.username=ingest",
    )
    assert not [d for d in docs if d["kind"] == "Secret" and "-kafka-" in d["metadata"]["name"]]
    writer = find(docs, "Deployment", "-writer")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in writer["containers"][0]["env"]}
    assert env["SENSORLOG_WRITER_KAFKA_SASL_USERNAME"]["value"] == "ingest"
    assert env["SENSORLOG_WRITER_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "my-kafka-scram"
    )
    assert {v["name"]: v for v in writer["volumes"]}["kafka-ca"]["secret"]["secretName"] == (
        "my-kafka-tls"
    )
    sts = find(docs, "StatefulSet", "-kafka")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in sts["volumes"]}["tls"]["secret"]["secretName"] == "my-kafka-tls"


def test_no_secret_value_inline_in_any_manifest() -> None:
    docs = render(*ON)
    secrets = [d for d in docs if d["kind"] == "Secret"]
    values = [v for d in secrets for v in secret_data(d).values()]
    pem_bodies = [line for v in values for line in v.splitlines() if len(line) == 64]
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for v in values:
            assert v not in text, f"{doc['kind']}/{doc['metadata']['name']} holds a secret"
        for line in pem_bodies:
            assert line not in text, f"{doc['kind']}/{doc['metadata']['name']} holds PEM"


@pytest.mark.parametrize(
    "values, message",
    [
        ([*ON, "kafkaSecurity.protocol=SASL_SSL"], "leave kafkaSecurity.* unset"),
        (
            [
                "kafkaSecurity.protocol=SASL_SSL",
                "kafkaSecurity.saslUsername=u",
                "kafkaSecurity.saslPasswordSecret.name=p",
            ],
            "set kafka.security.enabled=true",
        ),
    ],
)
def test_contradicting_kafka_security_values_fail(values: list[str], message: str) -> None:
    r = helm("helm4", "template", "s", str(CHART), *sets(*values), check=False)
    assert r.returncode != 0 and message in r.stderr, r.stderr


# --------------------------------------------------------------------------- real servers


@pytest.fixture(scope="module")
def kube(request: pytest.FixtureRequest) -> Any:
    if not HELMS["helm4"].is_file():
        pytest.skip("helm not installed: run `make tools` (hack/tools/helm.sh)")
    return request.getfixturevalue("control_plane")


def test_generated_secrets_are_kept_on_upgrade(kube: Any) -> None:
    """`lookup` only runs against a cluster: install, upgrade (twice, once changing a
    value that touches the StatefulSet) and the certificate and passwords stay."""
    name = ns = "sl-kafka-secure"
    base = [
        "upgrade",
        "--install",
        name,
        str(CHART),
        "-n",
        ns,
        "--create-namespace",
        "--no-hooks",
        "--server-side=true",
        "--kubeconfig",
        str(kube.kubeconfig),
        "--timeout",
        "120s",
        *sets(*ON, "kafka.persistence.whenDeleted=Delete"),
    ]

    def read() -> dict[str, dict[str, str]]:
        out = {}
        for secret in (f"{name}-kafka-tls", f"{name}-kafka-scram"):
            r = subprocess.run(
                [
                    str(HELMS["helm4"].parent / "kubectl")
                    if (HELMS["helm4"].parent / "kubectl").is_file()
                    else "kubectl",
                    "--kubeconfig",
                    str(kube.kubeconfig),
                    "get",
                    "secret",
                    secret,
                    "-n",
                    ns,
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            out[secret] = json.loads(r.stdout)["data"]
        return out

    try:
        helm("helm4", *base)
        first = read()
        assert first[f"{name}-kafka-scram"]["password"]
        helm("helm4", *base)
        helm("helm4", *base, *sets("kafka.logRetentionHours=24"))
        assert read() == first
        revision = json.loads(
            helm(
                "helm4",
                "status",
                name,
                "-n",
                ns,
                "--kubeconfig",
                str(kube.kubeconfig),
                "-o",
                "json",
            ).stdout
        )["version"]
        assert revision == 3
    finally:
        helm(
            "helm4", "uninstall", name, "-n", ns, "--kubeconfig", str(kube.kubeconfig), check=False
        )


def test_real_kafka_accepts_the_generated_certificate_key_and_password(
    tmp_path: Path,
) -> None:
    """Apache Kafka (the 4.x jars of the security suite) with the chart's generated PEM
    key (PKCS#8), certificate and SCRAM password: the writer's client settings, as
    rendered, publish and read over SASL_SSL. The names in the certificate are the
    cluster's, so only here the host name check is off (covered by the SAN test)."""
    import asyncio

    docs = render(*ON)
    tls = secret_data(find(docs, "Secret", "-kafka-tls"))
    password = secret_data(find(docs, "Secret", "-kafka-scram"))["password"]
    for key, text in tls.items():
        (tmp_path / key).write_text(text)
    writer = find(docs, "Deployment", "-writer")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in writer["env"]}
    broker = Kafka(
        tmp_path / "kafka",
        tls=KafkaTls(
            tmp_path / "ca.crt",
            tmp_path / "tls.crt",
            tmp_path / "tls.key",
            {env["SENSORLOG_WRITER_KAFKA_SASL_USERNAME"]: password},
        ),
    ).start()
    try:
        topic = "chart-secure"
        asyncio.run(create_topics(broker.bootstrap, {topic: 1}))
        security = {
            "SENSORLOG_WRITER_KAFKA_BOOTSTRAP_SERVERS": broker.sasl_ssl_bootstrap,
            "SENSORLOG_WRITER_KAFKA_SECURITY_PROTOCOL": env[
                "SENSORLOG_WRITER_KAFKA_SECURITY_PROTOCOL"
            ],
            "SENSORLOG_WRITER_KAFKA_SASL_MECHANISM": env["SENSORLOG_WRITER_KAFKA_SASL_MECHANISM"],
            "SENSORLOG_WRITER_KAFKA_SASL_USERNAME": env["SENSORLOG_WRITER_KAFKA_SASL_USERNAME"],
            "SENSORLOG_WRITER_KAFKA_SASL_PASSWORD": password,
            "SENSORLOG_WRITER_KAFKA_SSL_CA_FILE": str(tmp_path / "ca.crt"),
            "SENSORLOG_WRITER_KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
        publish(security, topic, "file", "-", stdin=b'{"hello": "chart"}\n')
        got = asyncio.run(dead_letters(security, topic, 1))
        assert got == [b'{"hello": "chart"}']
    finally:
        broker.stop()
