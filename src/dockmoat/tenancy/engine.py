"""Tenancy's own calls to the engine (ownership look-ups and clean-up): the one I/O module.

JSON calls behind one small interface (`EngineApi.call`), made over the
gateway's own pooled upstream connections (`PooledEngine`): same daemon, same
TLS settings. These calls are few, small and bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

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
