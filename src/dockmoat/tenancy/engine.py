"""Tenancy's own calls to the engine (ownership look-ups and clean-up): the one I/O module.

JSON calls behind one small interface (`EngineApi.call`), made over the
gateway's own pooled upstream connections (`PooledEngine`): same daemon, same
TLS settings. These calls are few, small and bounded by a timeout. The one
stream followed, the engine's image events (imagewatch.py), goes over a
connection of the same pool that the gateway closes when it stops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from dockmoat.tenancy.imagewatch import OpenEvents, Streamed

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


class StreamingUpstream(Upstream, Protocol):
    """The gateway's `PooledUpstream`, which also follows streamed answers."""

    @property
    def closed(self) -> bool: ...

    def stream(self, method: str, path: str) -> AbstractAsyncContextManager[Streamed]: ...


def _encode_query(query: Mapping[str, Any] | None) -> str:
    params = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in (query or {}).items()}
    return urlencode(params)


class PooledEngine:
    """JSON calls over the gateway's own upstream connections (same daemon, same TLS)."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    @property
    def closed(self) -> bool:
        """The gateway stopped (its pool closed): nothing more is followed."""
        return bool(getattr(self._upstream, "closed", False))

    def image_events(self) -> OpenEvents | None:
        """How to open the engine's image events from a time, or None where this
        upstream cannot follow a stream (a stage's test double)."""
        upstream = self._upstream
        if not hasattr(upstream, "stream"):
            return None
        streaming: StreamingUpstream = upstream  # type: ignore[assignment]

        def open_events(since: int) -> AbstractAsyncContextManager[Streamed]:
            query = {"since": str(since), "filters": {"type": ["image"]}}
            return streaming.stream("GET", f"/v{API_VERSION}/events?{_encode_query(query)}")

        return open_events

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
