"""Settings shared by every process: one pydantic-settings class per process.

Each process subclasses :class:`ServiceSettings` with its own ``env_prefix``
(``SENSORLOG_WRITER_``, ``SENSORLOG_QUERY_``, ...). Settings are loaded once in
``__main__`` through :func:`load`, which turns a validation error into a short
message naming the environment variable and exits non-zero.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


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


class ServiceSettings(BaseSettings):
    """Fields every sensorlog process has."""

    model_config = SettingsConfigDict(
        env_prefix="SENSORLOG_", extra="ignore", validate_default=True, frozen=True
    )

    database_dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/postgres"),
        description="PostgreSQL/TimescaleDB URL, e.g. postgresql://user:pass@host:5432/db.",
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

    @field_validator("database_dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        return check_postgres_dsn(v)


S = TypeVar("S", bound=BaseSettings)


def describe_errors(cls: type[BaseSettings], exc: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "?"
        env = (prefix + field).upper()
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
