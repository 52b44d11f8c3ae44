"""Regenerate the committed Python stubs from protos/sensorlog/v1/*.proto.

``make proto`` runs this; protos/tests/test_stubs.py fails when the committed
stubs differ from what this produces.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
OUT = HERE / "src"


def generate(out: Path) -> list[Path]:
    protos = sorted((HERE / "sensorlog").rglob("*.proto"))
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{HERE}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out.rglob("*_pb2*.py*"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            rel = path.relative_to(tmp)
            shutil.copyfile(path, OUT / rel)
            sys.stderr.write(f"wrote {OUT / rel}\n")


if __name__ == "__main__":
    main()
