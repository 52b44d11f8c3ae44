"""KEDA's kafka trigger logs in to a secured Kafka with the writer's own credentials.

With `writer.keda.enabled` and a secured Kafka (bundled `kafka.security.enabled` or an
external one through `kafkaSecurity.*`) the chart renders a TriggerAuthentication whose
every reference is a Secret key (or the user-name variable) the same render hands to the
writer; a lag scaler without them cannot connect and autoscaling silently stops. On a
PLAINTEXT Kafka nothing changes.

No KEDA CRD schema is available offline (keda.sh is a FOREIGN_GROUP in test_chart.py), so
the KEDA objects are checked against the fields KEDA documents for its kafka scaler.
"""

from __future__ import annotations

from typing import Any

import pytest

from .test_chart import CHART, HELMS, _writer, helm, render

pytestmark = pytest.mark.integration

KEDA = ["writer.keda.enabled=true", "writer.autoscaling.enabled=false"]
EXTERNAL = ["kafka.enabled=false", "externalKafka.bootstrapServers=kafka.example:9093"]
# Keys other than the defaults, so a reference that ignores the values cannot pass.
SASL_SSL_SCRAM = [
    *EXTERNAL,
    "kafkaSecurity.protocol=SASL_SSL",
    "kafkaSecurity.saslMechanism=SCRAM-SHA-256",
    "kafkaSecurity.saslUsername=sensorlog-writer",
    "kafkaSecurity.saslPasswordSecret.name=kafka-writer",
    "kafkaSecurity.saslPasswordSecret.key=pw",
    "kafkaSecurity.caSecret.name=kafka-ca",
    "kafkaSecurity.caSecret.key=ca.pem",
]
SSL_MTLS = [
    *EXTERNAL,
    "kafkaSecurity.protocol=SSL",
    "kafkaSecurity.caSecret.name=kafka-ca",
    "kafkaSecurity.clientCertSecret=kafka-writer-tls",
]
SASL_PLAINTEXT_PLAIN = [
    *EXTERNAL,
    "kafkaSecurity.protocol=SASL_PLAINTEXT",
    "kafkaSecurity.saslMechanism=PLAIN",
    "kafkaSecurity.saslUsername=sensorlog-writer",
    "kafkaSecurity.saslPasswordSecret.name=kafka-writer",
]
SECURED = {
    "bundled-sasl-ssl": (["kafka.security.enabled=true"], {"ca", "password", "username"}),
    "external-sasl-ssl-scram": (SASL_SSL_SCRAM, {"ca", "password", "username"}),
    "external-ssl-mtls": (SSL_MTLS, {"ca", "cert", "key"}),
    "external-sasl-plaintext": (SASL_PLAINTEXT_PLAIN, {"password", "username"}),
}

# KEDA parameter -> the writer variable that carries the same credential.
WRITER_VARIABLE = {
    "ca": "SENSORLOG_WRITER_KAFKA_SSL_CA_FILE",
    "cert": "SENSORLOG_WRITER_KAFKA_SSL_CERT_FILE",
    "key": "SENSORLOG_WRITER_KAFKA_SSL_KEY_FILE",
    "password": "SENSORLOG_WRITER_KAFKA_SASL_PASSWORD",
    "username": "SENSORLOG_WRITER_KAFKA_SASL_USERNAME",
}
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
# What KEDA's kafka scaler documents (keda.sh/docs/2.10+/scalers/apache-kafka).
KEDA_KAFKA_AUTH_PARAMETERS = {
    "sasl",
    "username",
    "password",
    "tls",
    "ca",
    "cert",
    "key",
    "keyPassword",
}
KEDA_KAFKA_METADATA = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "allowIdleConsumers",
    "version",
    "sasl",
    "tls",
}


def sets(*values: str) -> list[str]:
    return [x for v in values for x in ("--set", v)]


def keda_render(which: str, *values: str) -> list[dict[str, Any]]:
    return render(which, None, *sets(*KEDA, *values))


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def kafka_trigger(docs: list[dict[str, Any]]) -> dict[str, Any]:
    triggers: list[dict[str, Any]] = one(docs, "ScaledObject")["spec"]["triggers"]
    (trigger,) = triggers
    assert trigger["type"] == "kafka"
    return trigger


def writer_credentials(docs: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Where the writer container gets each Kafka credential: ("secret", name, key) for a
    secretKeyRef or a file mounted from a Secret item, ("value", text) for a plain value."""
    pod = _writer(docs)["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "writer")
    env = {e["name"]: e for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    out: dict[str, tuple[str, ...]] = {}
    for parameter, variable in WRITER_VARIABLE.items():
        if variable not in env:
            continue
        var = env[variable]
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            out[parameter] = ("secret", ref["name"], ref["key"])
        elif variable.endswith("_FILE"):
            directory, filename = var["value"].rsplit("/", 1)
            secret = volumes[mounts[directory]]["secret"]
            item = next(i for i in secret["items"] if i["path"] == filename)
            out[parameter] = ("secret", secret["secretName"], item["key"])
        else:
            out[parameter] = ("value", var["value"])
    return out


def writer_env(docs: list[dict[str, Any]]) -> dict[str, str | None]:
    container = _writer(docs)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("which", sorted(HELMS))
@pytest.mark.parametrize("case", sorted(SECURED))
def test_trigger_authentication_references_what_the_writer_uses(which: str, case: str) -> None:
    values, parameters = SECURED[case]
    docs = keda_render(which, *values)
    auth = one(docs, "TriggerAuthentication")
    trigger = kafka_trigger(docs)
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert auth["metadata"]["name"] == "sensorlog-writer-kafka"
    # Both land in the release namespace: KEDA looks the reference up in the ScaledObject's.
    assert "namespace" not in auth["metadata"]
    assert "namespace" not in one(docs, "ScaledObject")["metadata"]

    uses = writer_credentials(docs)
    refs = auth["spec"].get("secretTargetRef", [])
    env_refs = auth["spec"].get("env", [])
    assert {r["parameter"] for r in [*refs, *env_refs]} == set(uses) == parameters
    for ref in refs:
        assert uses[ref["parameter"]] == ("secret", ref["name"], ref["key"]), ref
    for ref in env_refs:
        # KEDA reads the variable from this container of the scale target: the writer's own.
        assert ref["containerName"] == "writer"
        assert ref["name"] == WRITER_VARIABLE[ref["parameter"]]
        assert uses[ref["parameter"]][0] == "value"

    env = writer_env(docs)
    protocol = env["SENSORLOG_WRITER_KAFKA_SECURITY_PROTOCOL"]
    assert ("tls" in trigger["metadata"]) == (protocol in ("SSL", "SASL_SSL"))
    if "tls" in trigger["metadata"]:
        assert trigger["metadata"]["tls"] == "enable"
    mechanism = env.get("SENSORLOG_WRITER_KAFKA_SASL_MECHANISM")
    assert trigger["metadata"].get("sasl") == (mechanism and KEDA_SASL[mechanism])


@pytest.mark.parametrize("case", sorted(SECURED))
def test_keda_objects_use_only_documented_kafka_scaler_fields(case: str) -> None:
    docs = keda_render("helm4", *SECURED[case][0])
    auth = one(docs, "TriggerAuthentication")
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert set(auth["spec"]) <= {"secretTargetRef", "env"}
    for ref in auth["spec"].get("secretTargetRef", []):
        assert set(ref) == {"parameter", "name", "key"}
        assert all(isinstance(v, str) and v for v in ref.values()), ref
    for ref in auth["spec"].get("env", []):
        assert set(ref) == {"parameter", "name", "containerName"}
    parameters = {r["parameter"] for refs in auth["spec"].values() for r in refs}
    assert parameters <= KEDA_KAFKA_AUTH_PARAMETERS
    trigger = kafka_trigger(docs)
    assert set(trigger["metadata"]) <= KEDA_KAFKA_METADATA
    # KEDA refuses sasl/tls set in both places; the chart sets them in metadata only.
    assert not parameters & {"sasl", "tls"}
    assert all(isinstance(v, str) for v in trigger["metadata"].values())


@pytest.mark.parametrize("which", sorted(HELMS))
@pytest.mark.parametrize("case", sorted(SECURED))
def test_lint_strict_with_keda_on_a_secured_kafka(which: str, case: str) -> None:
    helm(which, "lint", "--strict", str(CHART), *sets(*KEDA, *SECURED[case][0]))


@pytest.mark.parametrize("which", sorted(HELMS))
def test_plaintext_kafka_gets_no_trigger_authentication(which: str) -> None:
    docs = keda_render(which)
    assert not [d for d in docs if d["kind"] == "TriggerAuthentication"]
    trigger = kafka_trigger(docs)
    assert "authenticationRef" not in trigger
    assert not {"sasl", "tls"} & set(trigger["metadata"])
    # KEDA's default protocol version (1.0.0) is refused by Kafka 4 (KIP-896).
    assert trigger["metadata"]["version"] == "2.1.0"


def test_kafka_version_of_the_lag_scaler_is_checked() -> None:
    docs = keda_render("helm4", "writer.keda.kafkaVersion=3.9.0")
    assert kafka_trigger(docs)["metadata"]["version"] == "3.9.0"
    args = ["template", "sensorlog", str(CHART), *sets(*KEDA, "writer.keda.kafkaVersion=latest")]
    r = helm("helm4", *args, check=False)
    assert r.returncode != 0 and "/writer/keda/kafkaVersion" in r.stderr


def test_tls_with_the_system_trust_store_needs_no_references() -> None:
    """SSL without a CA Secret or client certificate: nothing to hand over but `tls`."""
    docs = keda_render("helm4", *EXTERNAL, "kafkaSecurity.protocol=SSL")
    assert not [d for d in docs if d["kind"] == "TriggerAuthentication"]
    trigger = kafka_trigger(docs)
    assert trigger["metadata"]["tls"] == "enable"
    assert "sasl" not in trigger["metadata"] and "authenticationRef" not in trigger


def test_sasl_mechanism_keda_cannot_take_fails_rendering() -> None:
    """The schema already refuses other mechanisms; the template refuses too, so a
    mechanism added to the schema later cannot render a trigger that never connects."""
    values = [
        *KEDA,
        *EXTERNAL,
        "kafkaSecurity.protocol=SASL_SSL",
        "kafkaSecurity.saslMechanism=GSSAPI",
        "kafkaSecurity.saslUsername=sensorlog-writer",
        "kafkaSecurity.saslPasswordSecret.name=kafka-writer",
    ]
    args = ["template", "x", str(CHART), "--skip-schema-validation", *sets(*values)]
    r = helm("helm4", *args, check=False)
    assert r.returncode != 0
    assert "writer.keda.enabled with kafkaSecurity.saslMechanism=GSSAPI" in r.stderr, r.stderr
