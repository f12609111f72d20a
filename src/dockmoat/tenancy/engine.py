"""Tenancy's own calls to the engine (ownership look-ups and clean-up): the one I/O module.

Two ways to reach the engine behind one small interface (`EngineApi.call`):
inside `dockmoat serve`, the gateway's pooled upstream connections
(`PooledEngine`); elsewhere (tests, tools), a docker SDK client run in worker
threads (`Engine`). These calls are few, small and bounded by timeouts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import docker
import requests

from dockmoat.errors import UpstreamError

API_VERSION = "1.41"
TIMEOUT_S = 60.0


class EngineApi(Protocol):
    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON answer or None); UpstreamError when unreachable."""
        ...


class Upstream(Protocol):
    """The gateway's `UpstreamClient` (dockmoat.gateway.stages), as used here."""

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]: ...


def _encode_query(query: Mapping[str, Any] | None) -> str:
    params = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in (query or {}).items()}
    return urlencode(params)


class PooledEngine:
    """JSON calls over the gateway's own upstream connections (same daemon, same TLS)."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        target = f"/v{API_VERSION}{quote(path, safe='/:@')}"
        encoded = _encode_query(query)
        if encoded:
            target += "?" + encoded
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else None
        status, _headers, raw = await asyncio.wait_for(
            self._upstream.request(method, target, payload, headers), TIMEOUT_S
        )
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:
            answer = raw.decode("utf-8", "replace")
        return status, answer


class Engine:
    """JSON calls to a Docker engine through the docker SDK (outside the gateway)."""

    def __init__(self, base_url: str, tls: Any = None) -> None:
        self._api = docker.APIClient(
            base_url=base_url, version=API_VERSION, timeout=int(TIMEOUT_S), tls=tls or False
        )

    def close(self) -> None:
        self._api.close()

    def call_sync(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON or None) of one call; UpstreamError when unreachable."""
        url = f"{self._api.base_url}/v{API_VERSION}{quote(path, safe='/:@')}"
        params = {
            k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in (query or {}).items()
        }
        try:
            response = self._api.request(method, url, params=params, json=body, timeout=TIMEOUT_S)
        except (requests.RequestException, OSError) as error:
            raise UpstreamError(f"engine call {method} {path} failed: {error}") from error
        try:
            payload = response.json() if response.content else None
        except ValueError:
            payload = response.text
        return response.status_code, payload

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        return await asyncio.to_thread(self.call_sync, method, path, query, body)
