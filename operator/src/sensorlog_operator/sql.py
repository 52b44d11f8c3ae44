"""Quoting for the SQL the operator builds: DDL and TimescaleDB calls take no bind parameters.

Identifiers are already restricted by the CRD's patterns; quoting anyway keeps
a spec stored before a schema change from ever becoming SQL.
"""

from __future__ import annotations

from datetime import timedelta

from sensorlog_operator import duration


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def regclass(schema: str, name: str) -> str:
    return f"{literal(qualified(schema, name))}::regclass"


def interval(td: timedelta) -> str:
    return f"INTERVAL {literal(duration.to_interval(td))}"
