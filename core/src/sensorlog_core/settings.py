"""Settings shared by every process: one pydantic-settings class per process.

Each process subclasses :class:`ServiceSettings` with its own ``env_prefix``
(``SENSORLOG_WRITER_``, ``SENSORLOG_QUERY_``, ...). Settings are loaded once in
``__main__`` through :func:`load`, which turns a validation error into a short
message naming the environment variable and exits non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sensorlog_core.secretfiles import read_secret_file, readable_file

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
PgSslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


def check_postgres_dsn(value: SecretStr) -> SecretStr:
    """Reject a DSN asyncpg would choke on later, without echoing it (it may hold a password)."""
    raw = value.get_secret_value()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid postgresql:// URL ({exc})") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("must start with postgresql:// (e.g. postgresql://user@host:5432/db)")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("has no host (e.g. postgresql://user@host:5432/db)")
    if port is not None and not 0 < port < 65536:
        raise ValueError("has a port outside 1-65535")
    return value


def pg_url(
    raw: str,
    *,
    sslmode: str | None = None,
    rootcert: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    password: SecretStr | None = None,
) -> str:
    """A postgresql:// URL with TLS parameters (asyncpg reads them from the query) and a password.

    Settings win over the same parameters already in the URL, so a DSN Secret
    shared with other tools can stay as it is.
    """
    parts = urlsplit(raw)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name, value in (
        ("sslmode", sslmode),
        ("sslrootcert", rootcert),
        ("sslcert", cert),
        ("sslkey", key),
    ):
        if value is not None:
            params[name] = str(value)
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{quote(password.get_secret_value(), safe='')}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(params), parts.fragment))


class ServiceSettings(BaseSettings):
    """Fields every sensorlog process has: logs, the status endpoint, tracing."""

    model_config = SettingsConfigDict(
        env_prefix="SENSORLOG_",
        extra="ignore",
        validate_default=True,
        frozen=True,
        # A ValidationError's text would otherwise quote the DSN or password it rejected;
        # subclasses inherit this (pydantic merges model_config).
        hide_input_in_errors=True,
    )

    log_level: LogLevel = Field("INFO", description="Least severe level that is logged.")
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line (for clusters); text: for humans."
    )
    metrics_port: int = Field(
        9100,
        ge=0,
        le=65535,
        description="HTTP status port (/metrics, /healthz, /readyz); 0: off.",
    )
    metrics_host: str = Field("0.0.0.0", description="Address the metrics endpoint binds.")  # noqa: S104
    tracing_endpoint: str = Field(
        "",
        description="OTLP gRPC endpoint of the trace collector, e.g. http://jaeger:4317; "
        "empty: tracing off (no SDK loaded, no cost).",
    )
    tracing_sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces kept (parent-based: a traced caller stays traced).",
    )
    tracing_service_name: str = Field(
        "", description="service.name of this process's spans; empty: the program's name."
    )


class DatabaseSettings(ServiceSettings):
    """A process that talks to PostgreSQL/TimescaleDB (writer, query, migrate)."""

    database_dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/postgres"),
        description="PostgreSQL/TimescaleDB URL, e.g. postgresql://user:pass@host:5432/db.",
    )
    database_sslmode: PgSslMode | None = Field(
        None,
        description="TLS to the database: disable ... verify-full; unset: the DSN's sslmode "
        "(asyncpg's default: prefer).",
    )
    database_ssl_root_cert_file: Path | None = Field(
        None, description="PEM CA that signed the database's certificate (verify-ca/verify-full)."
    )
    database_ssl_cert_file: Path | None = Field(
        None, description="PEM client certificate, for servers that require one."
    )
    database_ssl_key_file: Path | None = Field(
        None, description="PEM key of the client certificate."
    )
    database_password_file: Path | None = Field(
        None,
        description="File holding the database password (e.g. a mounted Secret); overrides "
        "the DSN's password.",
    )

    @field_validator("database_dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        return check_postgres_dsn(v)

    @field_validator(
        "database_ssl_root_cert_file",
        "database_ssl_cert_file",
        "database_ssl_key_file",
        "database_password_file",
    )
    @classmethod
    def _database_file(cls, v: Path | None) -> Path | None:
        return readable_file(v)

    @model_validator(mode="after")
    def _database_tls(self) -> DatabaseSettings:
        env = str(self.model_config.get("env_prefix", "")).upper() + "DATABASE_"
        if (self.database_ssl_cert_file is None) != (self.database_ssl_key_file is None):
            raise ValueError(f"{env}SSL_CERT_FILE and {env}SSL_KEY_FILE go together")
        if self.database_sslmode in ("verify-ca", "verify-full") and not (
            self.database_ssl_root_cert_file
            or "sslrootcert=" in self.database_dsn.get_secret_value()
        ):
            raise ValueError(
                f"{env}SSLMODE={self.database_sslmode} needs {env}SSL_ROOT_CERT_FILE "
                "(the CA that signed the server's certificate)"
            )
        return self

    def database_url(self, dsn: SecretStr | None = None) -> str:
        """``dsn`` (default: database_dsn) with the TLS settings and the password file applied.

        The result holds the password: hand it to asyncpg, never to a log line.
        """
        return pg_url(
            (dsn or self.database_dsn).get_secret_value(),
            sslmode=self.database_sslmode,
            rootcert=self.database_ssl_root_cert_file,
            cert=self.database_ssl_cert_file,
            key=self.database_ssl_key_file,
            password=read_secret_file(self.database_password_file)
            if self.database_password_file
            else None,
        )


class ConsulSettings(ServiceSettings):
    """Consul registration and KV configuration, for the long-running services."""

    consul_enabled: bool = Field(
        False,
        description="Register in Consul and read configuration from its KV store "
        "(long-running services only).",
    )
    consul_address: str = Field(
        "http://127.0.0.1:8500", description="HTTP API of the local Consul agent."
    )
    consul_token: SecretStr | None = Field(None, description="Consul ACL token.")
    consul_service_name: str = Field(
        "", description="Name registered in Consul; empty: the program's name."
    )
    consul_service_address: str = Field(
        "",
        description="Address other services reach this one at (and the health check "
        "probes); empty: this host's name.",
    )
    consul_tags: list[str] = Field(
        default_factory=list, description="Extra tags of the registration (JSON list in env)."
    )
    consul_check_interval_s: float = Field(
        10.0, gt=0, description="Interval of Consul's health check of this service."
    )
    consul_deregister_after_s: float = Field(
        600.0,
        ge=60,
        description="Consul drops the registration after its check is critical this long.",
    )
    consul_kv_config: bool = Field(
        True,
        description="With Consul on, read settings from its KV store: defaults < KV < "
        "environment; safe ones reload on change.",
    )
    consul_kv_prefix: str = Field(
        "",
        description="KV prefix: PREFIX holds a JSON/YAML mapping of settings, PREFIX/NAME "
        "one setting; empty: sensorlog/<service name>.",
    )
    consul_retry_max_s: float = Field(
        30.0, gt=0, description="Cap of the backoff between failed Consul calls."
    )


S = TypeVar("S", bound=BaseSettings)


def describe_errors(cls: type[BaseSettings], exc: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        # Whole-model checks have no field; their messages name the variables themselves.
        env = (prefix + field).upper() if field else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {env}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def load(cls: type[S], **overrides: Any) -> S:
    """Load settings from the environment; on error print which variable is wrong and exit 2."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        print(describe_errors(cls, exc), file=sys.stderr)  # noqa: T201 - before logging exists
        raise SystemExit(2) from None
