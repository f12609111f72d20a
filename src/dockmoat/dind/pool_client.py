"""Taking a warm daemon from a running `dockmoat dind pool` (stdlib only: the warm path).

Protocol on the pool's unix socket: one JSON line each way.

    -> {"op": "take", "name": NAME, "shape": {...DindOptions.shape(), "host": ...}}
    <- {"ok": true, "daemon": DindInfo.to_json()}
     | {"ok": false, "reason": "empty" | "shape" | "exists" | "error", "message": "..."}
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from dockmoat.errors import ConfigError

SOCKET_ENV = "DOCKMOAT_DIND_POOL_SOCKET"
MAX_MESSAGE = 64 * 1024


def default_socket(env: dict[str, str] | None = None, uid: int | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if env.get(SOCKET_ENV):
        return Path(env[SOCKET_ENV])
    if (os.geteuid() if uid is None else uid) == 0:
        return Path("/run/dockmoat/dind-pool.sock")
    runtime = env.get("XDG_RUNTIME_DIR") or f"/tmp/dockmoat-{os.geteuid()}"
    return Path(runtime) / "dockmoat" / "dind-pool.sock"


def read_message(sock: socket.socket) -> dict[str, Any]:
    """One bounded JSON line; ValueError when oversized, truncated or not an object."""
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(8192)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError("message too large")
    line, _, _ = data.partition(b"\n")
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("message is not a JSON object")
    return message


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def take(
    path: Path, name: str, shape: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any] | None:
    """A warm daemon's `DindInfo` JSON, or None when no pool answers or none fits.

    Raises ConfigError when the pool refuses NAME (it exists already).
    """
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            send_message(sock, {"op": "take", "name": name, "shape": shape})
            reply = read_message(sock)
    except (OSError, ValueError):
        return None  # no pool (stale socket) or a broken one: start cold
    if reply.get("ok") is True and isinstance(reply.get("daemon"), dict):
        daemon: dict[str, Any] = reply["daemon"]
        return daemon
    if reply.get("reason") == "exists":
        raise ConfigError(str(reply.get("message") or f"a dind daemon named {name} already exists"))
    return None
