import os
import subprocess
import sys

import pytest

from sensorlog_core.migrate import MigrateSettings
from sensorlog_core.settings import load


@pytest.mark.parametrize(
    ("dsn", "why"),
    [
        ("mysql://u:hunter2@db/x", "must start with postgresql://"),
        ("postgresql://u:hunter2@db:99999/x", "not a valid postgresql:// URL"),
        ("postgresql:///x", "has no host"),
    ],
)
def test_bad_dsn_names_the_variable_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], dsn: str, why: str
) -> None:
    monkeypatch.setenv("SENSORLOG_MIGRATE_DATABASE_DSN", dsn)
    with pytest.raises(SystemExit) as exc:
        load(MigrateSettings)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "SENSORLOG_MIGRATE_DATABASE_DSN" in err
    assert why in err
    assert "hunter2" not in err


def test_bad_enum_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENSORLOG_MIGRATE_TIMESCALEDB", "maybe")
    with pytest.raises(SystemExit):
        load(MigrateSettings)
    assert "SENSORLOG_MIGRATE_TIMESCALEDB" in capsys.readouterr().err


def test_secret_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSORLOG_MIGRATE_DATABASE_DSN", "postgresql://u:hunter2@db/x")
    s = load(MigrateSettings)
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())


def test_migrate_command_exits_non_zero_on_bad_config() -> None:
    env = dict(os.environ, SENSORLOG_MIGRATE_DATABASE_DSN="not a url")
    r = subprocess.run(
        [sys.executable, "-m", "sensorlog_core.migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "SENSORLOG_MIGRATE_DATABASE_DSN" in r.stderr


def test_migrate_command_exits_non_zero_when_database_unreachable() -> None:
    env = dict(
        os.environ,
        SENSORLOG_MIGRATE_DATABASE_DSN="postgresql://postgres@127.0.0.1:1/postgres",
        SENSORLOG_MIGRATE_CONNECT_TIMEOUT="2",
    )
    r = subprocess.run(
        [sys.executable, "-m", "sensorlog_core.migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "cannot connect to the database" in r.stdout
