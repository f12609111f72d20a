"""Certificates: chain, SANs, usages, and a real mutual-TLS handshake in-process."""

from __future__ import annotations

import io
import socket
import ssl
import tarfile
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from dockmoat.dind import certs


@pytest.fixture(scope="module")
def ca() -> certs.KeyPair:
    return certs.new_ca()


@pytest.fixture(scope="module")
def issued(ca: certs.KeyPair) -> certs.DaemonCerts:
    return certs.issue_daemon_certs(ca, "ci-1-abcd", ["docker", "ci-1-abcd"], ["172.30.0.2"])


def _write(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def test_keys_are_ecdsa_p256(issued: certs.DaemonCerts) -> None:
    for pem in (issued.server.cert_pem, issued.client.cert_pem):
        key = x509.load_pem_x509_certificate(pem).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"


def test_server_sans_cover_every_way_in(issued: certs.DaemonCerts) -> None:
    cert = x509.load_pem_x509_certificate(issued.server.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"docker", "ci-1-abcd", "localhost"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "172.30.0.2",
        "127.0.0.1",
    }
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_is_for_client_auth_only(issued: certs.DaemonCerts) -> None:
    cert = x509.load_pem_x509_certificate(issued.client.cert_pem)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False


def test_load_ca_refuses_mismatched_key(ca: certs.KeyPair) -> None:
    other = certs.new_ca()
    with pytest.raises(ValueError, match="does not match"):
        certs.load_ca(certs.KeyPair(ca.cert_pem, other.key_pem))


def test_bad_ip_is_a_value_error(ca: certs.KeyPair) -> None:
    with pytest.raises(ValueError):
        certs.issue_daemon_certs(ca, "x", [], ["not-an-ip"])


def test_server_tar_layout_and_modes(issued: certs.DaemonCerts) -> None:
    with tarfile.open(fileobj=io.BytesIO(certs.server_cert_tar(issued, 1000, 1000))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members)[-1] == "certs/server/ready"  # written last: the start signal
        assert members["certs/server/key.pem"].mode == 0o600
        assert members["certs/server/key.pem"].uid == 1000
        key = tar.extractfile("certs/server/key.pem")
        assert key is not None and key.read() == issued.server.key_pem
        ca = tar.extractfile("certs/server/ca.pem")
        assert ca is not None and ca.read() == issued.server_ca_pem


def _handshake(server_dir: Path, client_dir: Path, server_hostname: str) -> tuple[bool, str | None]:
    """A real TLS 1.2+/1.3 handshake over a socketpair; (client ok, server error)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_dir / "cert.pem", server_dir / "key.pem")
    server_ctx.load_verify_locations(server_dir / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    # dockerd (Go) trusts any certificate in its CA file as an anchor, also the
    # per-daemon client CA, which is not self-signed; OpenSSL needs to be told.
    server_ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    client_ctx = ssl.create_default_context(cafile=str(client_dir / "ca.pem"))
    client_ctx.load_cert_chain(client_dir / "cert.pem", client_dir / "key.pem")
    left, right = socket.socketpair()
    server_error: list[str] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(right, server_side=True) as tls:
                tls.sendall(b"OK")
        except (ssl.SSLError, OSError) as error:
            server_error.append(str(error))

    thread = threading.Thread(target=serve)
    thread.start()
    ok = False
    try:
        with client_ctx.wrap_socket(left, server_hostname=server_hostname) as tls:
            ok = tls.recv(2) == b"OK"
    except (ssl.SSLError, OSError):
        ok = False
    thread.join(5)
    return ok, server_error[0] if server_error else None


def _dirs(tmp: Path, issued: certs.DaemonCerts, tag: str) -> tuple[Path, Path]:
    server = _write(
        tmp / tag / "server",
        {
            "ca.pem": issued.server_ca_pem,
            "cert.pem": issued.server.cert_pem,
            "key.pem": issued.server.key_pem,
        },
    )
    client = _write(
        tmp / tag / "client",
        {
            "ca.pem": issued.client_ca_pem,
            "cert.pem": issued.client.cert_pem,
            "key.pem": issued.client.key_pem,
        },
    )
    return server, client


@pytest.mark.parametrize("hostname", ["docker", "127.0.0.1", "172.30.0.2", "localhost"])
def test_mutual_tls_works_for_every_san(
    tmp_path: Path, issued: certs.DaemonCerts, hostname: str
) -> None:
    server, client = _dirs(tmp_path, issued, "a")
    ok, server_error = _handshake(server, client, hostname)
    assert ok and server_error is None


def test_unknown_hostname_is_refused_by_the_client(
    tmp_path: Path, issued: certs.DaemonCerts
) -> None:
    server, client = _dirs(tmp_path, issued, "a")
    ok, _ = _handshake(server, client, "elsewhere.example")
    assert not ok


def test_other_daemons_client_cert_is_refused(
    tmp_path: Path, ca: certs.KeyPair, issued: certs.DaemonCerts
) -> None:
    """Same manager CA, other daemon: its client certificate must not open this daemon."""
    other = certs.issue_daemon_certs(ca, "ci-2-ef01", ["docker"], ["172.30.1.2"])
    server, _ = _dirs(tmp_path, issued, "a")
    _, other_client = _dirs(tmp_path, other, "b")
    ok, server_error = _handshake(server, other_client, "docker")
    assert not ok
    assert server_error is not None


def test_client_without_certificate_is_refused(tmp_path: Path, issued: certs.DaemonCerts) -> None:
    server, client = _dirs(tmp_path, issued, "a")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server / "cert.pem", server / "key.pem")
    server_ctx.load_verify_locations(server / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    # dockerd (Go) trusts any certificate in its CA file as an anchor, also the
    # per-daemon client CA, which is not self-signed; OpenSSL needs to be told.
    server_ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    client_ctx = ssl.create_default_context(cafile=str(client / "ca.pem"))
    left, right = socket.socketpair()
    errors: list[str] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(right, server_side=True) as tls:
                tls.sendall(b"OK")
        except (ssl.SSLError, OSError) as error:
            errors.append(str(error))

    thread = threading.Thread(target=serve)
    thread.start()
    with (
        pytest.raises((ssl.SSLError, OSError)),
        client_ctx.wrap_socket(left, server_hostname="docker") as tls,
    ):
        tls.recv(2)
        tls.recv(2)
    thread.join(5)
    assert errors
