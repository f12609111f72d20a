"""The pool's one-JSON-line protocol (real unix sockets, no engine)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from dockmoat.dind import pool_client
from dockmoat.errors import ConfigError


def test_messages_roundtrip_and_are_bounded() -> None:
    left, right = socket.socketpair()
    with left, right:
        pool_client.send_message(left, {"op": "take", "name": "x"})
        assert pool_client.read_message(right) == {"op": "take", "name": "x"}
        left.sendall(b"[1, 2]\n")
        with pytest.raises(ValueError):
            pool_client.read_message(right)
        left.sendall(b"x" * (pool_client.MAX_MESSAGE + 10))
        with pytest.raises(ValueError, match="too large"):
            pool_client.read_message(right)


def test_default_socket() -> None:
    assert pool_client.default_socket({}, uid=0) == Path("/run/dockmoat/dind-pool.sock")
    assert pool_client.default_socket({"XDG_RUNTIME_DIR": "/r"}, uid=1000) == Path(
        "/r/dockmoat/dind-pool.sock"
    )
    assert pool_client.default_socket({pool_client.SOCKET_ENV: "/s.sock"}, uid=0) == Path("/s.sock")


def _serve_once(path: Path, reply: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)
        server.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_take_without_pool_or_with_a_stale_socket_is_none(tmp_path: Path) -> None:
    assert pool_client.take(tmp_path / "absent.sock", "x", {}) is None
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens
    assert pool_client.take(stale, "x", {}) is None


@pytest.mark.parametrize(
    "reply,expected",
    [
        ({"ok": True, "daemon": {"name": "x"}}, {"name": "x"}),
        ({"ok": False, "reason": "empty"}, None),
        ({"ok": False, "reason": "shape"}, None),
    ],
)
def test_take_replies(tmp_path: Path, reply: dict[str, object], expected: object) -> None:
    path = tmp_path / "pool.sock"
    thread = _serve_once(path, json.dumps(reply).encode() + b"\n")
    assert pool_client.take(path, "x", {}) == expected
    thread.join(5)


def test_take_refused_name_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pool.sock"
    thread = _serve_once(path, b'{"ok": false, "reason": "exists", "message": "taken"}\n')
    with pytest.raises(ConfigError, match="taken"):
        pool_client.take(path, "x", {})
    thread.join(5)
