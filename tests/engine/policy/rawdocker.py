"""Raw Engine API calls over the daemon's unix socket (http.client), bytes in, JSON out."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from dockmoat.api.engines import EngineVersion, from_version_answer


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def call(socket_path: str, method: str, target: str, body: bytes | None = None) -> tuple[int, Any]:
    """(status, decoded JSON or raw text) of one request; the body is sent verbatim."""
    connection = _UnixConnection(socket_path)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data) if data else None
    except ValueError:
        return response.status, data.decode("utf-8", "replace")


def socket_of(docker_host: str) -> str:
    assert docker_host.startswith("unix://"), "these tests talk to a unix socket"
    return docker_host.removeprefix("unix://")


def create_container(
    socket_path: str,
    image: str,
    cmd: list[str],
    labels: dict[str, str],
    host_config: dict[str, Any],
) -> tuple[int, Any]:
    """POST /containers/create of a networkless container with these HostConfig fields."""
    body = {"Image": image, "Cmd": cmd, "Labels": labels,
            "HostConfig": {"NetworkMode": "none", **host_config}}  # fmt: skip
    return call(socket_path, "POST", "/v1.41/containers/create", json.dumps(body).encode())


def engine_version(socket_path: str) -> EngineVersion:
    """The engine's own `/version` (ApiVersion, MinAPIVersion, Version)."""
    connection = _UnixConnection(socket_path)
    try:
        connection.request("GET", "/version")
        data = connection.getresponse().read()
    finally:
        connection.close()
    return from_version_answer(data)
