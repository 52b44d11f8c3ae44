"""pytest fixture: one real control plane (etcd + kube-apiserver) per test session.

Use it from a test module or conftest with
``from sensorlog_stack.fixtures_apiserver import control_plane``, or load it as a
plugin with ``-p sensorlog_stack.fixtures_apiserver``. Tests that use it skip,
naming ``make tools``, only when the binaries are not installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sensorlog_stack.apiserver import ControlPlane, missing_binaries

__all__ = ["control_plane"]


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            "Kubernetes control plane not installed ("
            + ", ".join(p.name for p in missing)
            + " missing): run `make tools`"
        )
    cp = ControlPlane(tmp_path_factory.mktemp("control-plane")).start()
    try:
        yield cp
    finally:
        cp.stop()
