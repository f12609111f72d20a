"""The /_ping reply check of probe.py (pure: bytes in, verdict out)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dockmoat.dind.probe import ping_ok, reply_complete

DOCKER_REPLY = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\n"
    b"Cache-Control: no-cache, no-store, must-revalidate\r\nContent-Length: 2\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nDocker-Experimental: false\r\n"
    b"Ostype: linux\r\nPragma: no-cache\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\n"
    b"Date: Fri, 27 Nov 2026 22:00:00 GMT\r\n\r\nOK"
)


def test_docker_reply_is_ok_and_complete() -> None:
    assert reply_complete(DOCKER_REPLY)
    assert ping_ok(DOCKER_REPLY)


def test_partial_reply_is_not_complete() -> None:
    assert not reply_complete(DOCKER_REPLY[:-1])
    assert not ping_ok(DOCKER_REPLY[:-1])
    assert not reply_complete(DOCKER_REPLY[:40])


def test_other_status_or_body_is_not_ok() -> None:
    assert not ping_ok(DOCKER_REPLY.replace(b"200 OK", b"500 Internal Server Error"))
    assert not ping_ok(DOCKER_REPLY[:-2] + b"NO")
    assert not ping_ok(b"SSH-2.0-OpenSSH_9.6\r\n\r\nOK")
    assert not ping_ok(b"")


def test_no_content_length_is_never_complete() -> None:
    # Then only the peer closing ends the read (bounded by size and timeout).
    assert not reply_complete(b"HTTP/1.1 200 OK\r\n\r\nOK")
    assert ping_ok(b"HTTP/1.1 200 OK\r\n\r\nOK")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    reply_complete(data)
    ping_ok(data)
