"""Configuration of the query service (env prefix ``SENSORLOG_QUERY_``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from sensorlog_core.secretfiles import readable_file
from sensorlog_core.settings import ConsulSettings, DatabaseSettings, check_postgres_dsn


class QuerySettings(DatabaseSettings, ConsulSettings):
    """Settings of ``sensorlog-query-server``; loaded once in ``__main__``."""

    model_config = SettingsConfigDict(
        env_prefix="SENSORLOG_QUERY_", extra="ignore", validate_default=True, frozen=True
    )
    # Read per call (or per probe), so a Consul KV change takes effect without a
    # restart; every other field is bound into the server or pool at start-up.
    SAFE_RELOAD: ClassVar[frozenset[str]] = frozenset(
        {
            "log_level",
            "sensors_default_page_size",
            "sensors_max_page_size",
            "readings_default_page_size",
            "readings_max_page_size",
            "max_buckets",
            "max_sensor_ids",
            "health_check_interval",
            "shutdown_grace",
            "stream_batch_size",
            "continuous_aggregates",
            "continuous_aggregates_refresh",
        }
    )

    grpc_host: str = Field("0.0.0.0", description="Address the gRPC server binds.")  # noqa: S104
    grpc_port: int = Field(
        50051, ge=0, le=65535, description="Port of the gRPC server; 0 picks a free one."
    )
    grpc_tls_cert_file: Path | None = Field(
        None, description="PEM server certificate (chain); set with grpc_tls_key_file for TLS."
    )
    grpc_tls_key_file: Path | None = Field(None, description="PEM private key of the server.")
    grpc_tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA of client certificates; set: every client must present one (mTLS).",
    )
    grpc_health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Plaintext port serving only grpc.health.v1, for kubelet gRPC probes "
        "(they cannot speak TLS); 0: none.",
    )
    read_database_dsn: SecretStr | None = Field(
        None,
        description="DSN of a read replica for all queries; unset: database_dsn. "
        "Lets the read side scale apart from the writer's primary.",
    )
    pool_min_size: int = Field(
        0, ge=0, description="Connections kept open; 0 lets the server start while the db is down."
    )
    pool_max_size: int = Field(10, ge=1, description="Most connections the server opens.")
    connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for a new database connection."
    )
    sensors_default_page_size: int = Field(
        100, ge=1, description="ListSensors page size when the request says 0."
    )
    sensors_max_page_size: int = Field(1000, ge=1, description="Largest ListSensors page size.")
    readings_default_page_size: int = Field(
        1000, ge=1, description="ListReadings page size when the request says 0."
    )
    readings_max_page_size: int = Field(10000, ge=1, description="Largest ListReadings page size.")
    max_buckets: int = Field(
        10000,
        ge=1,
        description="Most buckets per sensor one AggregateReadings may ask for (range / bucket).",
    )
    max_sensor_ids: int = Field(1000, ge=1, description="Most sensor ids one request may name.")
    statement_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a query may run when the client set no (or a longer) deadline.",
    )
    health_check_interval: float = Field(
        2.0, gt=0, description="Seconds between database probes that drive grpc.health.v1."
    )
    shutdown_grace: float = Field(
        20.0, ge=0, description="Seconds in-flight calls get to finish after SIGTERM."
    )
    stream_batch_size: int = Field(
        1000,
        ge=1,
        le=100000,
        description="Rows fetched per database round trip and sent per StreamReadings message.",
    )
    continuous_aggregates: bool = Field(
        True,
        description="On TimescaleDB, answer AggregateReadings from a matching continuous "
        "aggregate (made by the operator, or tagged likewise) where it is materialised and "
        "up to date; raw rows elsewhere. Same answers either way.",
    )
    continuous_aggregates_refresh: float = Field(
        10.0,
        gt=0,
        description="Seconds between reads of the continuous-aggregate catalog (new views, "
        "watermarks); freshness itself is checked by every statement.",
    )

    @field_validator("read_database_dsn")
    @classmethod
    def _read_dsn(cls, v: SecretStr | None) -> SecretStr | None:
        return None if v is None else check_postgres_dsn(v)

    @field_validator("grpc_tls_cert_file", "grpc_tls_key_file", "grpc_tls_client_ca_file")
    @classmethod
    def _tls_file(cls, v: Path | None) -> Path | None:
        return readable_file(v)

    @model_validator(mode="after")
    def _tls(self) -> QuerySettings:
        if (self.grpc_tls_cert_file is None) != (self.grpc_tls_key_file is None):
            raise ValueError(
                "SENSORLOG_QUERY_GRPC_TLS_CERT_FILE and SENSORLOG_QUERY_GRPC_TLS_KEY_FILE "
                "go together"
            )
        if self.grpc_tls_client_ca_file is not None and self.grpc_tls_cert_file is None:
            raise ValueError(
                "SENSORLOG_QUERY_GRPC_TLS_CLIENT_CA_FILE (mTLS) needs "
                "SENSORLOG_QUERY_GRPC_TLS_CERT_FILE and _KEY_FILE"
            )
        if self.grpc_health_port and self.grpc_health_port == self.grpc_port:
            raise ValueError("SENSORLOG_QUERY_GRPC_HEALTH_PORT must differ from GRPC_PORT")
        return self

    @property
    def tls(self) -> bool:
        return self.grpc_tls_cert_file is not None

    @model_validator(mode="after")
    def _sizes(self) -> QuerySettings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        if self.sensors_default_page_size > self.sensors_max_page_size:
            raise ValueError("sensors_default_page_size must not exceed sensors_max_page_size")
        if self.readings_default_page_size > self.readings_max_page_size:
            raise ValueError("readings_default_page_size must not exceed readings_max_page_size")
        return self

    @property
    def read_dsn(self) -> str:
        """The DSN queries run on: the replica when configured, else the primary."""
        return self.database_url(self.read_database_dsn or self.database_dsn)
