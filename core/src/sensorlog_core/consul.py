"""Consul: service registration with a health check, and settings layered from the KV store.

Nothing here may stop a service: every Consul call runs in a background task
that logs and retries with capped backoff. The service works without Consul;
it is only missing from the catalog (or runs on its env/default settings)
until Consul answers.

Configuration layering is defaults < Consul KV < environment. The KV layer
lives under one prefix (default ``sensorlog/<service name>``):

- the key ``PREFIX`` itself holds a JSON or YAML mapping of settings;
- a key ``PREFIX/NAME`` holds one setting (JSON or YAML scalar/list) and wins
  over the mapping.

A change is watched with blocking queries. Settings a class lists in
``SAFE_RELOAD`` are applied in place; any other change is logged as needing
a restart. A value that does not parse or validate keeps the last good
configuration and the log says why.

The HTTP client is a few lines on asyncio streams: cancellable (a blocking
query can be abandoned at shutdown at once, unlike a urllib call in a thread)
and no new dependency.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.metadata
import json
import logging
import os
import random
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import yaml
from prometheus_client import Counter, Gauge
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from sensorlog_core.settings import ConsulSettings, describe_errors

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ConsulSettings)

REGISTERED = Gauge(
    "sensorlog_consul_registered", "1 while this process's Consul registration is in place."
)
CONSUL_ERRORS = Counter(
    "sensorlog_consul_errors_total",
    "Failed Consul calls, by operation (register, deregister, kv).",
    ["operation"],
)
CONFIG_RELOADS = Counter(
    "sensorlog_config_reloads_total",
    "Consul KV configuration changes seen, by result (applied, rejected, restart_required).",
    ["result"],
)
RESTART_REQUIRED = Gauge(
    "sensorlog_config_restart_required",
    "1 while Consul KV asks for a setting that only takes effect after a restart.",
)


class ConsulError(OSError):
    """Consul could not be reached or answered with an error status."""


class BadConfig(ValueError):
    """The KV layer cannot be turned into settings; the message says why."""


# --------------------------------------------------------------------------- HTTP


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def index(self) -> int:
        """X-Consul-Index: the raft index a blocking query waits past (0 if absent)."""
        try:
            return int(self.headers.get("x-consul-index", "0"))
        except ValueError:
            return 0


class ConsulClient:
    """The parts of Consul's HTTP API (``/v1/agent/service``, ``/v1/kv``) this project uses."""

    def __init__(self, address: str, token: str | None = None, timeout: float = 10.0) -> None:
        parts = urlsplit(address if "://" in address else f"http://{address}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"consul address must be http(s)://host:port, got {address!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 8500)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.token = token
        self.timeout = timeout

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,
        raw: bytes | None = None,
    ) -> Response:
        """One request; ``body`` is sent as JSON, ``raw`` as it is (KV values)."""
        payload = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        try:
            return await asyncio.wait_for(
                self._request(method, path, params, payload, body is not None),
                timeout or self.timeout,
            )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            raise ConsulError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        payload: bytes,
        is_json: bool,
    ) -> Response:
        target = path + ("?" + urlencode(params) if params else "")
        head = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Connection: close",
            "Accept: application/json",
            f"Content-Length: {len(payload)}",
        ]
        if is_json:
            head.append("Content-Type: application/json")
        if self.token:
            head.append(f"X-Consul-Token: {self.token}")
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._ssl)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
            status_line = (await reader.readline()).decode("latin-1").split(None, 2)
            if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
                raise ValueError(f"not an HTTP response: {status_line!r}")
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                data = await _read_chunked(reader)
            elif "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
            else:
                data = await reader.read()
            return Response(int(status_line[1]), headers, data)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _ok(self, r: Response, what: str) -> Response:
        if r.status >= 300:
            detail = r.body.decode("utf-8", "replace").strip()[:300]
            raise ConsulError(f"{what}: HTTP {r.status}: {detail}")
        return r

    async def register(self, service: Mapping[str, Any]) -> None:
        r = await self.request("PUT", "/v1/agent/service/register", body=dict(service))
        self._ok(r, "register")

    async def deregister(self, service_id: str) -> None:
        r = await self.request("PUT", f"/v1/agent/service/deregister/{quote(service_id, safe='')}")
        self._ok(r, "deregister")

    async def service(self, service_id: str) -> dict[str, Any] | None:
        """The agent's record of a local service, None when it has none."""
        r = await self.request("GET", f"/v1/agent/service/{quote(service_id, safe='')}")
        if r.status == 404:
            return None
        data = self._ok(r, "service").json()
        return data if isinstance(data, dict) else None

    async def kv_list(
        self, prefix: str, index: int = 0, wait_s: float | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """(X-Consul-Index, entries under ``prefix``); with ``index`` a blocking query."""
        params = {"recurse": "true"}
        timeout = None
        if index and wait_s:
            params.update(index=str(index), wait=f"{int(wait_s * 1000)}ms")
            # Consul adds up to wait/16 of jitter before answering "no change".
            timeout = wait_s * 17 / 16 + self.timeout
        r = await self.request("GET", f"/v1/kv/{quote(prefix)}", params, timeout=timeout)
        if r.status == 404:  # nothing under the prefix (the index is still valid)
            return r.index, []
        data = self._ok(r, "kv").json()
        return r.index, list(data or [])

    async def kv_put(self, key: str, value: bytes) -> None:
        """Used by tests and tooling; services only read the KV store."""
        r = await self.request("PUT", f"/v1/kv/{quote(key)}", raw=value)
        self._ok(r, "kv put")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


def _backoff(attempt: int, cap: float) -> float:
    return float(min(cap, 0.5 * 2.0**attempt)) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter


# --------------------------------------------------------------------------- registration


def advertised_address(configured: str) -> str:
    """The address to register: configured, else what this host's name resolves to.

    In Kubernetes a pod's hostname resolves to its pod IP, which is what Consul's
    health check and other services must reach.
    """
    if configured:
        return configured
    name = socket.gethostname()
    try:
        return socket.gethostbyname(name)
    except OSError:
        return name


@dataclass
class Registration:
    """One service instance in the agent's catalog and the check Consul runs on it."""

    name: str
    address: str
    port: int
    check: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    service_id: str = ""

    def __post_init__(self) -> None:
        if not self.service_id:
            self.service_id = f"{self.name}-{self.address}-{self.port}"

    def payload(self) -> dict[str, Any]:
        return {
            "ID": self.service_id,
            "Name": self.name,
            "Tags": self.tags,
            "Address": self.address,
            "Port": self.port,
            # Consul limits meta values to 512 characters.
            "Meta": {k: v[:512] for k, v in self.meta.items()},
            "Check": self.check,
        }


def http_check(url: str, settings: ConsulSettings) -> dict[str, Any]:
    return {
        "Name": "readiness",
        "HTTP": url,
        "Method": "GET",
        "Interval": f"{settings.consul_check_interval_s:g}s",
        "Timeout": f"{max(1.0, settings.consul_check_interval_s / 2):g}s",
        "DeregisterCriticalServiceAfter": f"{settings.consul_deregister_after_s:g}s",
    }


def grpc_check(target: str, settings: ConsulSettings, use_tls: bool = False) -> dict[str, Any]:
    return {
        "Name": "grpc.health.v1",
        "GRPC": target,
        "GRPCUseTLS": use_tls,
        "Interval": f"{settings.consul_check_interval_s:g}s",
        "Timeout": f"{max(1.0, settings.consul_check_interval_s / 2):g}s",
        "DeregisterCriticalServiceAfter": f"{settings.consul_deregister_after_s:g}s",
    }


class Registrar:
    """Keeps one registration in place from start until stop, then removes it.

    Registers with capped backoff until the agent accepts, then checks every
    ``resync_s`` that the agent still has it (an agent restarted without its
    data directory forgets services) and registers again if not.
    """

    def __init__(
        self,
        client: ConsulClient,
        registration: Registration,
        retry_max_s: float = 30.0,
        resync_s: float = 30.0,
    ) -> None:
        self.client = client
        self.registration = registration
        self.retry_max_s = retry_max_s
        self.resync_s = resync_s
        self.registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="consul-registrar")

    async def _run(self) -> None:
        attempt = 0
        reg = self.registration
        while True:
            try:
                known = self.registered.is_set()
                if not known or await self.client.service(reg.service_id) is None:
                    await self.client.register(reg.payload())
                    log.info(
                        "registered in consul" if not known else "registered in consul again",
                        extra={"service": reg.name, "service_id": reg.service_id},
                    )
                    self.registered.set()
                    REGISTERED.set(1)
                attempt = 0
                await asyncio.sleep(self.resync_s)
            except ConsulError as exc:
                CONSUL_ERRORS.labels("register").inc()
                self.registered.clear()
                REGISTERED.set(0)
                delay = _backoff(attempt, self.retry_max_s)
                attempt += 1
                log.warning(
                    "consul registration failed; the service keeps running and retries",
                    extra={"error": str(exc)[:300], "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)

    async def stop(self, timeout: float = 3.0) -> None:
        """Stop retrying and deregister (bounded: shutdown must not wait on Consul)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self.registered.is_set():
            return
        try:
            await asyncio.wait_for(self.client.deregister(self.registration.service_id), timeout)
            log.info("deregistered from consul", extra={"service_id": self.registration.service_id})
        except (ConsulError, TimeoutError) as exc:
            CONSUL_ERRORS.labels("deregister").inc()
            log.warning(
                "consul deregistration failed; the check will mark this instance critical",
                extra={"error": str(exc)[:300]},
            )
        self.registered.clear()
        REGISTERED.set(0)


# --------------------------------------------------------------------------- configuration


def _parse_text(raw: bytes, where: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadConfig(f"{where}: not UTF-8") from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadConfig(f"{where}: neither JSON nor YAML ({str(exc).splitlines()[0]})") from None


def kv_values(prefix: str, entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The settings the KV entries under ``prefix`` name (see the module docs).

    Raises BadConfig naming the key when a value cannot be read.
    """
    base = prefix.rstrip("/")
    document: dict[str, Any] = {}
    single: dict[str, Any] = {}
    for entry in entries:
        key = str(entry.get("Key", ""))
        encoded = entry.get("Value")
        if key.rstrip("/") == base:
            if not encoded:
                continue  # a "folder" key, or an empty document
            doc = _parse_text(base64.b64decode(encoded), key)
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise BadConfig(f"{key}: must be a mapping of settings, got {type(doc).__name__}")
            document.update({str(k).lower(): v for k, v in doc.items()})
        elif key.startswith(base + "/"):
            name = key[len(base) + 1 :]
            if not name or "/" in name:
                continue  # a sub-folder: not ours
            single[name.lower()] = (
                None if encoded is None else _parse_text(base64.b64decode(encoded), key)
            )
    return {**document, **{k: v for k, v in single.items() if v is not None}}


def env_names(cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> set[str]:
    """Fields the environment sets (they win over KV)."""
    env = {k.upper() for k in (os.environ if environ is None else environ)}
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    return {name for name in cls.model_fields if (prefix + name.upper()) in env}


def layered(cls: type[S], kv: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> S:
    """Settings from defaults < ``kv`` < environment.

    Unknown names are logged and ignored (a newer config may name settings an
    older build lacks); Consul's own settings cannot come from Consul.
    Raises BadConfig with the offending keys when the result does not validate.
    """
    known = {n for n in cls.model_fields if not n.startswith("consul_")}
    unknown = sorted(set(kv) - known)
    if unknown:
        log.warning("consul KV names unknown settings; ignored", extra={"names": unknown})
    from_env = env_names(cls, environ)
    overrides = {k: v for k, v in kv.items() if k in known and k not in from_env}
    try:
        # Keyword arguments rank above the environment in pydantic-settings; the
        # env-set names were removed above, so the environment still wins.
        return cls(**overrides)
    except ValidationError as exc:
        raise BadConfig(describe_errors(cls, exc).replace("invalid configuration:", "")) from None


def safe_fields(cls: type[BaseSettings]) -> frozenset[str]:
    return frozenset(getattr(cls, "SAFE_RELOAD", frozenset({"log_level"})))


Apply = Callable[[Any, set[str]], None]


class RemoteConfig(Generic[S]):
    """The KV layer: read once at start, then followed with blocking queries.

    ``apply(settings, changed)`` (given to :meth:`start`) receives the new
    effective settings (the old ones with only the safe changes) and the
    names that changed.
    """

    def __init__(
        self,
        client: ConsulClient,
        cls: type[S],
        prefix: str,
        current: S,
        retry_max_s: float = 30.0,
        wait_s: float = 300.0,
    ) -> None:
        self.client = client
        self.cls = cls
        self.prefix = prefix
        self.current = current
        self.apply: Apply = lambda settings, changed: None
        self.retry_max_s = retry_max_s
        self.wait_s = wait_s
        self.index = 0
        self.pending_restart: dict[str, Any] = {}
        self._last_entries: list[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def initial(self, timeout: float = 5.0) -> S:
        """Settings with the KV layer as it is now; on any failure the ones we have."""
        try:
            self.index, entries = await asyncio.wait_for(self.client.kv_list(self.prefix), timeout)
        except (ConsulError, TimeoutError) as exc:
            CONSUL_ERRORS.labels("kv").inc()
            log.warning(
                "consul KV unreachable at start; running on environment and defaults",
                extra={"error": str(exc)[:300], "prefix": self.prefix},
            )
            return self.current
        self._last_entries = entries
        try:
            self.current = layered(self.cls, kv_values(self.prefix, entries))
        except BadConfig as exc:
            CONFIG_RELOADS.labels("rejected").inc()
            log.error(
                "bad configuration in consul KV; running on environment and defaults",
                extra={"prefix": self.prefix, "reason": str(exc).strip()},
            )
        return self.current

    def start(self, apply: Apply) -> None:
        """Follow KV changes; ``apply`` puts safe changes into effect."""
        self.apply = apply
        self._task = asyncio.create_task(self._watch(), name="consul-config-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        attempt = 0
        while True:
            try:
                index, entries = await self.client.kv_list(
                    self.prefix, index=max(self.index, 1), wait_s=self.wait_s
                )
            except ConsulError as exc:
                CONSUL_ERRORS.labels("kv").inc()
                delay = _backoff(attempt, self.retry_max_s)
                attempt += 1
                log.warning(
                    "consul KV watch failed; retrying",
                    extra={"error": str(exc)[:300], "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            if index < self.index:
                # The index went backwards (a restored or new Consul): start over, per its docs.
                self.index = 0
            elif index == self.index:
                continue  # the wait timed out without a change
            else:
                self.index = index
            if entries == self._last_entries:
                continue  # a write elsewhere in the cluster woke us; ours is unchanged
            self._last_entries = entries
            self.consider(entries)

    def consider(self, entries: list[dict[str, Any]]) -> None:
        """Apply a new KV state: safe changes now, others reported, bad values refused."""
        try:
            wanted = layered(self.cls, kv_values(self.prefix, entries))
        except BadConfig as exc:
            CONFIG_RELOADS.labels("rejected").inc()
            log.error(
                "bad configuration in consul KV; keeping the last good one",
                extra={"prefix": self.prefix, "reason": str(exc).strip()},
            )
            return
        safe = safe_fields(self.cls)
        changed = {
            n for n in self.cls.model_fields if getattr(wanted, n) != getattr(self.current, n)
        }
        apply_now = changed & safe
        later = changed - safe
        self.pending_restart = {n: getattr(wanted, n) for n in sorted(later)}
        RESTART_REQUIRED.set(1 if later else 0)
        if later:
            CONFIG_RELOADS.labels("restart_required").inc()
            log.warning(
                "consul KV changes settings that need a restart; not applied",
                extra={"settings": sorted(later)},
            )
        if not apply_now:
            return
        effective = self.current.model_copy(update={n: getattr(wanted, n) for n in apply_now})
        try:
            # Cross-field rules (e.g. default page size <= max) must hold for the mix too.
            self.cls.model_validate(effective.model_dump())
        except ValidationError as exc:
            CONFIG_RELOADS.labels("rejected").inc()
            log.error(
                "consul KV change conflicts with settings in effect; keeping the last good one",
                extra={"reason": describe_errors(self.cls, exc)},
            )
            return
        self.current = effective
        if "log_level" in apply_now:
            logging.getLogger().setLevel(effective.log_level)
        self.apply(effective, apply_now)
        CONFIG_RELOADS.labels("applied").inc()
        log.info("configuration reloaded from consul KV", extra={"settings": sorted(apply_now)})


def version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_prefix(settings: ConsulSettings, service_name: str) -> str:
    return settings.consul_kv_prefix or f"sensorlog/{service_name}"


def client_for(settings: ConsulSettings) -> ConsulClient:
    token = settings.consul_token.get_secret_value() if settings.consul_token else None
    return ConsulClient(settings.consul_address, token)
