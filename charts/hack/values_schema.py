"""Generate each chart's values.schema.json from its values.yaml (cert-manager style).

Types are inferred from the defaults; a ``# @schema {json}`` line above a key
replaces the inferred schema of that key (``{"$ref": "#/$defs/NAME"}`` picks one
of DEFS below, ``{"$ref": "charts/NAME"}`` embeds a subchart's schema). Every
object gets ``additionalProperties: false`` so a typo'd value fails ``helm
install``; the ``# --`` comment above a key becomes its description.

    python charts/hack/values_schema.py          # rewrite the schemas
    python charts/hack/values_schema.py --check  # exit 1 when one is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHARTS = Path(__file__).resolve().parent.parent
UMBRELLA = CHARTS / "sensorlog"

_QUANTITY = {"type": ["string", "integer", "number"]}
DEFS: dict[str, Any] = {
    "stringMap": {"type": "object", "additionalProperties": {"type": "string"}},
    "resources": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "requests": {"type": "object", "additionalProperties": _QUANTITY},
            "limits": {"type": "object", "additionalProperties": _QUANTITY},
        },
    },
}
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


class SchemaError(ValueError):
    pass


def doc_comments(text: str) -> dict[tuple[str, ...], tuple[str, dict[str, Any] | None]]:
    """Map each mapping key's path to (its `# --` description, its `# @schema` override)."""
    out: dict[tuple[str, ...], tuple[str, dict[str, Any] | None]] = {}
    stack: list[tuple[int, str]] = []
    doc: list[str] = []
    override: dict[str, Any] | None = None
    in_doc = False
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("# --"):
            doc, in_doc = [stripped[4:].strip()], True
            continue
        if stripped.startswith("# @schema"):
            try:
                override = json.loads(stripped[len("# @schema") :])
            except json.JSONDecodeError as exc:
                raise SchemaError(f"line {lineno}: bad @schema JSON: {exc}") from None
            in_doc = False
            continue
        if stripped.startswith("#"):
            if in_doc:
                doc.append(stripped[1:].strip())
            continue
        in_doc = False
        m = _KEY.match(line)
        if not m or stripped.startswith("-"):
            if stripped:
                doc, override = [], None
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group("key")))
        out[tuple(k for _, k in stack)] = (" ".join(d for d in doc if d), override)
        doc, override = [], None
    return out


def _infer(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    if value is None:
        raise SchemaError("null default needs a # @schema line")
    raise SchemaError(f"cannot infer a schema for {value!r}")


def _resolve(override: dict[str, Any], chart_dir: Path) -> dict[str, Any]:
    ref = override.get("$ref")
    if ref is None:
        return override
    if ref.startswith("#/$defs/"):
        copied: dict[str, Any] = json.loads(json.dumps(DEFS[ref.removeprefix("#/$defs/")]))
        return copied
    if ref.startswith("charts/"):
        sub = json.loads((chart_dir / ref / "values.schema.json").read_text())
        sub.pop("$schema", None)
        sub.pop("title", None)
        return dict(sub)
    raise SchemaError(f"unknown $ref {ref}")


def build(
    value: Any,
    path: tuple[str, ...],
    notes: dict[tuple[str, ...], tuple[str, dict[str, Any] | None]],
    chart_dir: Path,
) -> dict[str, Any]:
    description, override = notes.get(path, ("", None))
    if path and not description:
        raise SchemaError(f"{chart_dir.name}: {'.'.join(path)} has no '# --' doc comment")
    if override is not None:
        schema = _resolve(override, chart_dir)
    elif isinstance(value, dict):
        if not value and path[-1:] != ("global",):
            # An empty map is a map of user keys; closing it would reject every key.
            raise SchemaError(f"{chart_dir.name}: {'.'.join(path)} is empty: add a # @schema line")
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: build(v, (*path, k), notes, chart_dir) for k, v in value.items()},
        }
    else:
        schema = _infer(value)
    if description:
        schema = {"description": description, **schema}
    return schema


def schema_for(chart_dir: Path) -> dict[str, Any]:
    text = (chart_dir / "values.yaml").read_text()
    values = yaml.safe_load(text) or {}
    body = build(values, (), doc_comments(text), chart_dir)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"Values of the {chart_dir.name} chart (charts/hack/values_schema.py)",
        **body,
    }


def chart_dirs() -> list[Path]:
    """Subcharts first: the umbrella embeds their schemas."""
    return [*sorted(p.parent for p in (UMBRELLA / "charts").glob("*/Chart.yaml")), UMBRELLA]


def render(chart_dir: Path) -> str:
    return json.dumps(schema_for(chart_dir), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a schema is stale")
    args = parser.parse_args(argv)
    stale = []
    for chart_dir in chart_dirs():
        target = chart_dir / "values.schema.json"
        if args.check:
            # Subcharts are compared before the umbrella reads them.
            if not target.exists() or target.read_text() != render(chart_dir):
                stale.append(str(target.relative_to(CHARTS.parent)))
        else:
            target.write_text(render(chart_dir))
    if stale:
        print("stale, run python charts/hack/values_schema.py:", *stale, sep="\n  ")  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
