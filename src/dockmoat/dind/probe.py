"""`GET /_ping` over mutual TLS to a nested daemon (stdlib only: it is on the warm path).

A raw request on an `ssl` socket rather than `http.client`: importing http.client
(and the email package under it) costs more than the ping itself in a short-lived
`dockmoat dind up` process.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

# Docker answers /_ping with a handful of headers and `OK`; anything longer is not it.
_MAX_REPLY = 16 * 1024


def tls_context(cert_dir: Path) -> ssl.SSLContext:
    """A client context that verifies the daemon against ca.pem and presents cert.pem/key.pem."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_dir / "ca.pem"))
    context.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
    return context


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value.strip()) if value.strip().isdigit() else None
    return None


def reply_complete(reply: bytes) -> bool:
    """Whether `reply` holds the headers and the whole body (a daemon may keep the
    connection open despite `Connection: close`: do not wait for it to close)."""
    head, separator, body = reply.partition(b"\r\n\r\n")
    length = _content_length(head) if separator else None
    return length is not None and len(body) >= length


def ping_ok(reply: bytes) -> bool:
    """Whether an HTTP/1.x reply to `GET /_ping` is `200` with the body `OK`."""
    head, separator, body = reply.partition(b"\r\n\r\n")
    if not separator:
        return False
    length = _content_length(head)
    if length is not None:
        body = body[:length]
    status = head.split(b"\r\n", 1)[0].split(b" ", 2)
    return (
        len(status) >= 2
        and status[0].startswith(b"HTTP/1.")
        and status[1] == b"200"
        and body == b"OK"
    )


def ping(host: str, port: int, context: ssl.SSLContext, timeout: float = 2.0) -> bool:
    """True when the daemon answers `OK`; False on any connection or TLS failure."""
    name = f"[{host}]" if ":" in host else host
    request = f"GET /_ping HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(request)
            reply = b""
            while len(reply) <= _MAX_REPLY and not reply_complete(reply):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return ping_ok(reply)
    except (OSError, ValueError):
        return False
