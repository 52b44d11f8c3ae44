"""Secrets and certificates mounted as files (Kubernetes Secret volumes).

Every setting that names such a file is checked at start-up, so a missing mount
stops the process with the variable's name instead of failing at the first
reconnect hours later.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr


def readable_file(value: Path | None) -> Path | None:
    """A configured file must be readable now, not at the first reconnect hours later."""
    if value is None:
        return None
    try:
        with value.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {value} ({exc.strerror or exc})") from None
    return value


def read_secret_file(path: Path) -> SecretStr:
    """A secret file's content without the trailing newline editors and `echo` add."""
    return SecretStr(path.read_text().rstrip("\r\n"))
