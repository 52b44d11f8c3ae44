"""Names shared by the CRD, the handlers and the chart: one place, no magic strings."""

from __future__ import annotations

from typing import Final

GROUP: Final = "timescale.sensorlog.io"
VERSION: Final = "v1alpha1"
KIND: Final = "Hypertable"
PLURAL: Final = "hypertables"

# kopf keeps its progress and the last handled spec in annotations under our group,
# so the status stays the structural one the CRD declares.
ANNOTATION_PREFIX: Final = GROUP
FINALIZER: Final = f"{GROUP}/finalizer"

# Conditions and their reasons (status.conditions[].reason).
READY: Final = "Ready"
SYNCED: Final = "Synced"
REASON_RECONCILED: Final = "Reconciled"
REASON_RECONCILING: Final = "Reconciling"
REASON_DB_UNAVAILABLE: Final = "DatabaseUnavailable"
REASON_SECRET_UNAVAILABLE: Final = "SecretUnavailable"  # noqa: S105 - a reason, not a secret
REASON_INVALID_SPEC: Final = "InvalidSpec"

# Event reasons (kubectl describe / get events).
EVENT_APPLIED: Final = "Applied"
EVENT_DRIFT: Final = "DriftRepaired"
EVENT_RECLAIMED: Final = "Reclaimed"
EVENT_FAILED: Final = "ReconcileFailed"

RETAIN: Final = "Retain"
DELETE: Final = "Delete"

POLICY_RETENTION: Final = "retention"
POLICY_COMPRESSION: Final = "compression"
CAGG_PREFIX: Final = "cagg/"

# Marker in COMMENT ON VIEW: only continuous aggregates carrying it are ever dropped.
OWNER_COMMENT_PREFIX: Final = "managed by sensorlog-operator: "
# Schema and table recording which resource manages which hypertable (per database).
CLAIMS_SCHEMA: Final = "sensorlog_operator"
CLAIMS_TABLE: Final = "claims"
REASON_CANNOT_APPLY: Final = "CannotApply"
REASON_TABLE_CLAIMED: Final = "TableClaimed"
REASON_DB_REJECTED: Final = "DatabaseRejected"
