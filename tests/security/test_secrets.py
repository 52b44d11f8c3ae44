"""No secret leaves a settings object: not through repr/str, model_dump, a validation
error, the start-up error message, or a structured log line. Every settings class of
every process is checked, found by walking the packages, so a new one cannot be missed."""

from __future__ import annotations

import importlib
import io
import logging
import pkgutil
import typing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from sensorlog_core.logs import JsonFormatter, TextFormatter
from sensorlog_core.settings import describe_errors

PACKAGES = ["sensorlog_core", "sensorlog_writer", "sensorlog_query", "sensorlog_operator"]
SENTINEL = "Sup3r-S3cret-\u00e4/:@?&"  # characters a URL must quote
QUOTED = quote(SENTINEL, safe="")
# Names that mean "this field is a secret" (a *_file field holds a path, not the secret).
SECRET_WORDS = ("password", "token", "secret", "dsn")


def _settings_classes() -> list[type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    for name in PACKAGES:
        try:
            pkg = importlib.import_module(name)
        except ImportError:
            continue
        modules = [pkg] + [
            importlib.import_module(m.name)
            for m in pkgutil.walk_packages(pkg.__path__, name + ".")
            if not m.name.endswith("__main__")
        ]
        for mod in modules:
            for obj in vars(mod).values():
                if (
                    isinstance(obj, type)
                    and issubclass(obj, BaseSettings)
                    and obj.__module__.startswith(tuple(PACKAGES))
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CLASSES = _settings_classes()


def _is_secret_name(field: str) -> bool:
    return any(w in field for w in SECRET_WORDS) and not field.endswith("_file")


# Classes that hold a secret (ServiceSettings, the operator's and publish's hold none).
WITH_SECRETS = [c for c in CLASSES if any(_is_secret_name(f) for f in c.model_fields)]


def _secret_values(cls: type[BaseSettings]) -> dict[str, Any]:
    """A valid configuration in which every secret field holds the sentinel."""
    values: dict[str, Any] = {}
    for field in cls.model_fields:
        if field.endswith("dsn"):
            values[field] = f"postgresql://app:{QUOTED}@db.example:5432/x"
        elif _is_secret_name(field):
            values[field] = SENTINEL
    if "kafka_sasl_password" in cls.model_fields:
        values.update(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="writer",
        )
    return values


def _leaks(text: str) -> bool:
    return SENTINEL in text or QUOTED in text or "Sup3r-S3cret" in text


def test_every_settings_class_is_found() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"ServiceSettings", "WriterSettings", "QuerySettings", "MigrateSettings"} <= names
    assert {"KafkaSecuritySettings", "PublishSecurity"} <= names
    with_secrets = {c.__name__ for c in WITH_SECRETS}
    assert {"DatabaseSettings", "ConsulSettings", "WriterSettings", "QuerySettings"} <= with_secrets
    assert {"MigrateSettings", "KafkaSecuritySettings"} <= with_secrets


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_secret_fields_are_secretstr_or_a_file(cls: type[BaseSettings]) -> None:
    for name, info in cls.model_fields.items():
        if any(w in name for w in SECRET_WORDS):
            args = typing.get_args(info.annotation) or (info.annotation,)
            assert SecretStr in args or Path in args, f"{cls.__name__}.{name} is {info.annotation}"


@pytest.mark.parametrize("cls", WITH_SECRETS, ids=lambda c: c.__name__)
def test_no_secret_in_repr_dump_or_logs(cls: type[BaseSettings]) -> None:
    values = _secret_values(cls)
    assert any(_is_secret_name(f) for f in values), f"{cls.__name__} has no secret to check"
    s = cls.model_validate(values)
    for text in (repr(s), str(s), str(s.model_dump()), s.model_dump_json()):
        assert not _leaks(text), text
    for formatter in (JsonFormatter(), TextFormatter()):
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter)
        log = logging.getLogger(f"test-secrets-{cls.__name__}")
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(logging.INFO)
        try:
            log.info("loaded", extra={"settings": s, **s.model_dump()})
        finally:
            log.removeHandler(handler)
        assert "loaded" in out.getvalue() and not _leaks(out.getvalue()), out.getvalue()


@pytest.mark.parametrize("cls", WITH_SECRETS, ids=lambda c: c.__name__)
def test_no_secret_in_validation_errors(cls: type[BaseSettings]) -> None:
    """A rejected value is not quoted back: neither in the exception nor in load()'s message."""
    values = _secret_values(cls)
    for field in list(values):
        if field.endswith("dsn"):
            # Rejected (port out of range) while holding the password.
            values[field] = f"postgresql://app:{QUOTED}@db:99999/x"
    # A non-secret field holding the sentinel is rejected without echoing it either.
    values["log_level" if "log_level" in cls.model_fields else "kafka_sasl_mechanism"] = SENTINEL
    with pytest.raises(ValidationError) as err:
        cls.model_validate(values)
    # err.value.errors() still carries the inputs (pydantic keeps them for programs);
    # what is printed or logged is the text below.
    for text in (str(err.value), repr(err.value), describe_errors(cls, err.value)):
        assert not _leaks(text), text


def test_database_url_quotes_the_file_password(tmp_path: Path) -> None:
    from urllib.parse import unquote, urlsplit

    from sensorlog_writer.settings import WriterSettings

    f = tmp_path / "pw"
    f.write_text(SENTINEL + "\n")
    s = WriterSettings(
        database_dsn="postgresql://app:old@db.example:5432/x?sslmode=prefer",
        database_password_file=f,
        database_sslmode="require",
    )
    url = urlsplit(s.database_url())
    assert unquote(url.password or "") == SENTINEL
    assert url.query == "sslmode=require"
    assert not _leaks(repr(s))
