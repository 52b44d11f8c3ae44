"""Dead-letter records: the bad record or array element, with the reason in headers.

Headers (all UTF-8): ``dlq.error`` (why), ``dlq.topic``, ``dlq.partition``,
``dlq.offset``, ``dlq.timestamp`` (original record time, ms), ``dlq.index``
(element index when one element of a JSON array failed), ``dlq.failed_at``
(ISO time). The original record's own headers (e.g. traceparent) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# The broker's default message.max.bytes is ~1 MiB: an oversize record could not
# be dead-lettered whole, so its value is cut here and marked dlq.truncated.
MAX_DLQ_VALUE = 900 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(
    *,
    dlq_topic: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    index: int | None = None,
    original_headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] = (),
) -> DeadLetter:
    headers = [(k, v) for k, v in original_headers if not k.startswith("dlq.")]
    headers += [
        ("dlq.error", reason.encode()),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
        ("dlq.timestamp", str(timestamp_ms).encode()),
        ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
    ]
    if index is not None:
        headers.append(("dlq.index", str(index).encode()))
    if value is not None and len(value) > MAX_DLQ_VALUE:
        value = value[:MAX_DLQ_VALUE]
        headers.append(("dlq.truncated", b"true"))
    return DeadLetter(dlq_topic, key, value, headers)
