"""A mutual-TLS TCP listener: client certificate required and verified, TLS 1.2+."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from gwserve import Served

from dockmoat.dind.certs import issue_daemon_certs, new_ca


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def tls_gateway(serve: Callable[..., Served], tmp_path: Path) -> tuple[Served, int, Path]:
    certs = issue_daemon_certs(new_ca(), "gw", ["localhost"], ["127.0.0.1"])
    files = {
        "server.pem": certs.server.cert_pem, "server-key.pem": certs.server.key_pem,
        "clients-ca.pem": certs.server_ca_pem, "cert.pem": certs.client.cert_pem,
        "key.pem": certs.client.key_pem, "ca.pem": certs.client_ca_pem,
    }  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    port = free_port()
    served = serve(
        "--profile", "permissive", "--listen", f"tcp://127.0.0.1:{port}",
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server-key.pem"),
        "--tls-ca", str(tmp_path / "clients-ca.pem"),
    )  # fmt: skip
    return served, port, tmp_path


def test_client_with_certificate_works(tls_gateway: tuple[Served, int, Path]) -> None:
    served, port, certs = tls_gateway
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    assert b" 200 " in _handshake(port, context)
    assert b" 200 " in _handshake(port, context, b"GET /v1.41/version HTTP/1.0\r\n\r\n")
    entry = served.audit_where(route="system.version")[-1]
    assert "gw client" in str(entry["tls_subject"])


def _handshake(
    port: int, context: ssl.SSLContext, request: bytes = b"GET /_ping HTTP/1.0\r\n\r\n"
) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        return tls.recv(100)


def test_client_without_certificate_is_refused(tls_gateway: tuple[Served, int, Path]) -> None:
    _served, port, certs = tls_gateway
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        reply = _handshake(port, context)
        # TLS 1.3 reports a missing client certificate on the first read.
        if not reply:
            raise ConnectionError("closed")


def test_old_tls_is_refused(tls_gateway: tuple[Served, int, Path]) -> None:
    _served, port, certs = tls_gateway
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _handshake(port, context)
