"""The one Kubernetes read the operator does itself: a DSN from a Secret.

kopf talks to the API server for everything else; this reuses the credentials
of kopf's login (a ServiceAccount in a pod, a kubeconfig elsewhere), so the
operator needs no Kubernetes client library.
"""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

log = logging.getLogger(__name__)

_TIMEOUT = aiohttp.ClientTimeout(total=15)


class SecretUnavailable(Exception):
    """The Secret or its key cannot be read; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Credentials:
    """Holds the ConnectionInfo of kopf's latest login, refreshed on every re-login."""

    def __init__(self) -> None:
        self.info: kopf.ConnectionInfo | None = None

    def login(self, **kwargs: Any) -> kopf.ConnectionInfo | None:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        self.info = info
        return info


CREDENTIALS = Credentials()


async def read_secret_key(namespace: str, name: str, key: str) -> str:
    info = CREDENTIALS.info
    if info is None:
        raise SecretUnavailable("not logged in to the Kubernetes API yet", permanent=False)
    url = f"{info.server.rstrip('/')}/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}"
    connector = aiohttp.TCPConnector(ssl=info.as_ssl_context())
    async with aiohttp.ClientSession(
        connector=connector, headers=info.as_http_headers(), timeout=_TIMEOUT
    ) as session:
        try:
            async with session.get(url) as resp:
                if resp.status == 404:
                    raise SecretUnavailable(
                        f"Secret {namespace}/{name} does not exist: create it with the DSN "
                        f"under key {key!r}",
                        permanent=False,  # it may be created later (e.g. by another chart)
                    )
                if resp.status == 403:
                    raise SecretUnavailable(
                        f"the operator may not read Secret {namespace}/{name}: grant 'get' on "
                        "secrets to its ServiceAccount (the chart's ClusterRole does)",
                        permanent=False,
                    )
                if resp.status >= 400:
                    raise SecretUnavailable(
                        f"reading Secret {namespace}/{name} failed with HTTP {resp.status}",
                        permanent=False,
                    )
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SecretUnavailable(
                f"Kubernetes API unreachable while reading Secret {namespace}/{name}: {exc}",
                permanent=False,
            ) from exc
    data = body.get("data") or {}
    if key not in data:
        raise SecretUnavailable(
            f"Secret {namespace}/{name} has no key {key!r} (keys: {sorted(data)}): "
            "set spec.dsnSecretRef.key or add the key",
            permanent=False,
        )
    return base64.b64decode(data[key]).decode().strip()
