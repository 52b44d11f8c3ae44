"""Durations as the CRD writes them (``30d``, ``1h30m``) to timedelta and PostgreSQL intervals.

Only fixed-length units: a month has no fixed length, and comparing the
database's interval with the spec must be exact.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"([0-9]+)(s|m|h|d|w)")
_WHOLE = re.compile(r"^([0-9]+(s|m|h|d|w))+$")


def parse(text: str) -> timedelta:
    """``"1h30m"`` -> ``timedelta(hours=1, minutes=30)``; ValueError on anything else."""
    if not _WHOLE.match(text):
        raise ValueError(f"{text!r} is not a duration like 30d, 12h or 1h30m (units s m h d w)")
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def to_interval(td: timedelta) -> str:
    """PostgreSQL interval text with fixed-length units only, e.g. ``30 days 2 hours``.

    Never months: TimescaleDB and asyncpg would then compare 30 days with 1 month.
    """
    seconds = int(td.total_seconds())
    parts = []
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {unit}")
    return " ".join(parts) or "0 seconds"


def render(td: timedelta) -> str:
    """The shortest CRD-style spelling, for status and messages: ``30d``, ``1h30m``."""
    seconds = int(td.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
