"""`GET /_ping` over mutual TLS to a nested daemon (stdlib only: it is on the warm path)."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path


def tls_context(cert_dir: Path) -> ssl.SSLContext:
    """A client context that verifies the daemon against ca.pem and presents cert.pem/key.pem."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_dir / "ca.pem"))
    context.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
    return context


def ping(host: str, port: int, context: ssl.SSLContext, timeout: float = 2.0) -> bool:
    """True when the daemon answers `OK`; False on any connection or TLS failure."""
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.request("GET", "/_ping")
        response = connection.getresponse()
        return response.status == 200 and response.read(16) == b"OK"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
