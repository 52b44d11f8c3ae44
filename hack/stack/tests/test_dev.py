import subprocess
import sys
from pathlib import Path

import pytest

from sensorlog_stack.proc import port_open

pytestmark = pytest.mark.integration


def test_dev_mode_round_trips_the_seed_reading_and_stops_everything(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sensorlog_stack.dev",
            "--data-dir",
            str(tmp_path),
            "--fresh",
            "--exit-after-demo",
            "--grpc-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert '"temperature": 30.0' in r.stdout
    assert '"ts": "2022-03-04T15:55:07Z"' in r.stdout
    # Everything it started is gone: the ports it printed are closed.
    kafka_port = int((tmp_path / "kafka" / "ports").read_text().split()[0])
    assert not port_open(kafka_port)
    out = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert out.stdout.strip() == "", f"processes left behind: {out.stdout}"
