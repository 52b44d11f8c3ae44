"""Kafka client security (TLS, mTLS, SASL) for every process that talks to Kafka.

:class:`KafkaSecuritySettings` is mixed into a process's settings class (the
writer's, the ``sensorlog-publish`` CLI's), so its fields take that class's env
prefix: ``SENSORLOG_WRITER_KAFKA_SECURITY_PROTOCOL`` and so on. Secrets are
``SecretStr`` or a file path (a mounted Kubernetes Secret); an impossible
combination stops the process at start-up with a message naming the variables.

:func:`client_kwargs` turns the settings into the keyword arguments every
aiokafka client takes; :func:`preflight` makes one connection before the
clients start, so a wrong password or an untrusted certificate ends the process
with one clear line instead of aiokafka's endless "Unable to bootstrap" retries.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sensorlog_core.secretfiles import read_secret_file, readable_file

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class KafkaSecurityError(RuntimeError):
    """Kafka refused us for a reason retrying cannot fix (credentials, certificates)."""


class KafkaSecuritySettings(BaseSettings):
    """Kafka connection security; mixed into a settings class that sets the env prefix."""

    # Errors must not quote a rejected password back (the subclass's config merges over this).
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT",
        description="PLAINTEXT, SSL (TLS, optionally mTLS), SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_ssl_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle that signed the brokers' certificates; unset: the "
        "system trust store.",
    )
    kafka_ssl_cert_file: Path | None = Field(
        None, description="PEM client certificate for mTLS (with kafka_ssl_key_file)."
    )
    kafka_ssl_key_file: Path | None = Field(None, description="PEM private key of the client.")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted kafka_ssl_key_file."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check the broker certificate names the host we dialled."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols only)."
    )
    kafka_sasl_username: str = Field("", description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (or kafka_sasl_password_file)."
    )
    kafka_sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password, e.g. a mounted Secret."
    )

    @field_validator(
        "kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file", "kafka_sasl_password_file"
    )
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        return readable_file(v)

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> KafkaSecuritySettings:
        env = str(self.model_config.get("env_prefix", "")).upper() + "KAFKA_"
        proto = self.kafka_security_protocol
        tls_files = {
            "SSL_CA_FILE": self.kafka_ssl_ca_file,
            "SSL_CERT_FILE": self.kafka_ssl_cert_file,
            "SSL_KEY_FILE": self.kafka_ssl_key_file,
        }
        if proto not in TLS_PROTOCOLS:
            for name, tls_file in tls_files.items():
                if tls_file is not None:
                    raise ValueError(
                        f"{env}{name} is set but {env}SECURITY_PROTOCOL={proto} does not use "
                        "TLS (use SSL or SASL_SSL)"
                    )
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError(
                f"{env}SSL_CERT_FILE and {env}SSL_KEY_FILE go together (mTLS needs both)"
            )
        sasl: dict[str, object] = {
            "SASL_MECHANISM": self.kafka_sasl_mechanism,
            "SASL_USERNAME": self.kafka_sasl_username or None,
            "SASL_PASSWORD": self.kafka_sasl_password,
            "SASL_PASSWORD_FILE": self.kafka_sasl_password_file,
        }
        if proto in SASL_PROTOCOLS:
            for name in ("SASL_MECHANISM", "SASL_USERNAME"):
                if sasl[name] is None:
                    raise ValueError(f"{env}SECURITY_PROTOCOL={proto} needs {env}{name}")
            if (self.kafka_sasl_password is None) == (self.kafka_sasl_password_file is None):
                raise ValueError(
                    f"{env}SECURITY_PROTOCOL={proto} needs exactly one of {env}SASL_PASSWORD "
                    f"and {env}SASL_PASSWORD_FILE"
                )
            if self.kafka_sasl_password_file is not None and not self.sasl_password():
                raise ValueError(
                    f"{env}SASL_PASSWORD_FILE {self.kafka_sasl_password_file} is empty"
                )
        else:
            for name, value in sasl.items():
                if value is not None:
                    raise ValueError(
                        f"{env}{name} is set but {env}SECURITY_PROTOCOL={proto} does not use "
                        "SASL (use SASL_SSL)"
                    )
        return self

    def sasl_password(self) -> str:
        if self.kafka_sasl_password_file is not None:
            return read_secret_file(self.kafka_sasl_password_file).get_secret_value()
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        return ""


def ssl_context(s: KafkaSecuritySettings) -> ssl.SSLContext:
    """TLS 1.2+ context verifying the brokers, with the client certificate when set."""
    ctx = ssl.create_default_context(
        cafile=str(s.kafka_ssl_ca_file) if s.kafka_ssl_ca_file else None
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = s.kafka_ssl_check_hostname
    if s.kafka_ssl_cert_file is not None and s.kafka_ssl_key_file is not None:
        password = s.kafka_ssl_key_password
        ctx.load_cert_chain(
            s.kafka_ssl_cert_file,
            s.kafka_ssl_key_file,
            password=password.get_secret_value() if password else None,
        )
    return ctx


def client_kwargs(s: KafkaSecuritySettings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer/Producer/AdminClient (and create_conn)."""
    kwargs: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if s.kafka_security_protocol in TLS_PROTOCOLS:
        kwargs["ssl_context"] = ssl_context(s)
    if s.kafka_security_protocol in SASL_PROTOCOLS:
        kwargs["sasl_mechanism"] = s.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = s.kafka_sasl_username
        kwargs["sasl_plain_password"] = s.sasl_password()
    return kwargs


def fatal_reason(exc: BaseException) -> str | None:
    """Why ``exc`` cannot be fixed by retrying, or None for a transient failure."""
    from aiokafka import errors

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, errors.SaslAuthenticationFailed | errors.IllegalSaslStateError):
        return f"SASL authentication failed ({exc})"
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"SASL mechanism refused ({exc})"
    return None


def _hostport(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), int(port)


async def preflight(bootstrap: str, s: KafkaSecuritySettings, timeout: float = 10.0) -> None:
    """Connect (TLS handshake, SASL login) to the first reachable bootstrap server once.

    Raises :class:`KafkaSecurityError` when a broker refuses the credentials or
    its certificate; an unreachable broker is left to the clients' own retries.
    """
    from aiokafka.conn import create_conn

    kwargs = client_kwargs(s)
    for address in bootstrap.split(","):
        host, port = _hostport(address)
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id="sensorlog-preflight",
                    request_timeout_ms=int(timeout * 1000),
                    **kwargs,
                ),
                timeout,
            )
        except Exception as exc:
            reason = fatal_reason(exc)
            if reason is not None:
                raise KafkaSecurityError(f"Kafka {host}:{port}: {reason}") from None
            continue
        conn.close()
        return
