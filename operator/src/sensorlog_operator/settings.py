"""Settings of ``sensorlog-operator`` (env prefix ``SENSORLOG_OPERATOR_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sensorlog_core.settings import ServiceSettings


class OperatorSettings(ServiceSettings):
    """Loaded once in ``__main__``; an invalid value stops the process at start-up.

    No database settings: each Hypertable names the Secret holding its database's DSN.
    """

    model_config = SettingsConfigDict(
        env_prefix="SENSORLOG_OPERATOR_", extra="ignore", validate_default=True, frozen=True
    )

    namespaces: str = Field(
        "",
        description="Comma-separated namespaces to watch; empty: every namespace (cluster-wide).",
    )
    drift_interval: float = Field(
        300.0, ge=1, description="Seconds between drift checks (and repairs) of each resource."
    )
    drift_initial_delay: float = Field(
        60.0, ge=0, description="Seconds after start-up or creation before the first drift check."
    )
    retry_delay: float = Field(
        15.0, gt=0, description="Seconds before retrying after a transient database/API error."
    )
    db_connect_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for a database connection."
    )
    delete_retries: int = Field(
        20,
        ge=1,
        description="Attempts to remove policies (reclaimPolicy Delete) before the finalizer "
        "is released anyway, with a warning event, so a lost database cannot block deletion.",
    )

    def namespace_list(self) -> list[str]:
        return [ns.strip() for ns in self.namespaces.split(",") if ns.strip()]
