"""Tenancy's own calls to the engine (ownership look-ups and clean-up): the one I/O module.

A blocking docker SDK client run in worker threads: these calls are few, small
and off the relay's hot path. Every call is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import docker
import requests

from dockmoat.errors import UpstreamError

API_VERSION = "1.41"
TIMEOUT_S = 60.0


class Engine:
    """JSON calls to a Docker engine."""

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
