"""Certificates for nested daemons: pure code on top of `cryptography`.

ECDSA P-256 instead of the official image's RSA-4096: the keys take microseconds
to make instead of seconds, and every Docker client and daemon accepts them.

Trust layout (one manager CA, one client-issuing CA per daemon):

    manager CA ──signs──> daemon server certificate   (clients verify it with ca.pem)
               └─signs──> per-daemon client CA ──signs──> client certificate

The nested dockerd trusts only its own client CA (`--tlscacert`), so the client
certificate of one daemon is refused by every other daemon of the same manager:
one job cannot drive another job's daemon even when it can reach its port.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Clocks of the host and the nested daemon are the same clock, but a remote
# engine or a client machine may lag a little.
_BACKDATE = datetime.timedelta(minutes=5)
CA_LIFETIME = datetime.timedelta(days=3650)
# Nested daemons live for a CI job (or wait in a pool); a month is plenty and
# bounds the harm of a leaked key.
LEAF_LIFETIME = datetime.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate (possibly with its chain) and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class DaemonCerts:
    """Everything one nested daemon and its clients need, as PEM bytes.

    `server_ca_pem` is what dockerd trusts for clients (the per-daemon client CA);
    `client_ca_pem` is what clients trust for the server (the manager CA).
    """

    server: KeyPair
    server_ca_pem: bytes
    client: KeyPair
    client_ca_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dockmoat"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    lifetime: datetime.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca_cert(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    now: datetime.datetime,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    lifetime: datetime.timedelta = CA_LIFETIME,
    path_length: int = 0,
) -> x509.Certificate:
    subject = _name(common_name)
    issuer_name = issuer[0].subject if issuer else subject
    signing_key = issuer[1] if issuer else key
    builder = (
        _builder(subject, issuer_name, key.public_key(), now, lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer[1].public_key()  # the issuer's key signs; its id links the chain
            ),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def _leaf_cert(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    now: datetime.datetime,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> x509.Certificate:
    builder = (
        _builder(_name(common_name), issuer[0].subject, key.public_key(), now, LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer[1], hashes.SHA256())


def new_ca(common_name: str = "dockmoat dind CA", now: datetime.datetime | None = None) -> KeyPair:
    """A fresh self-signed manager CA."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = _new_key()
    # path length 1: the per-daemon client CAs sit below it.
    return KeyPair(_cert_pem(_ca_cert(key, common_name, now, path_length=1)), _key_pem(key))


def load_ca(ca: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Parse a stored CA; raises ValueError when it is not an ECDSA CA."""
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or (
        public.public_numbers() != key.public_key().public_numbers()
    ):
        raise ValueError("the CA certificate does not match its key")
    return cert, key


def _sans(dns_names: Iterable[str], ips: Iterable[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    seen: set[str] = set()
    for dns in dns_names:
        if dns and dns not in seen:
            seen.add(dns)
            sans.append(x509.DNSName(dns))
    for ip in ips:
        if ip and ip not in seen:
            seen.add(ip)
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    return sans


def issue_daemon_certs(
    ca: KeyPair,
    daemon_id: str,
    dns_names: Iterable[str],
    ips: Iterable[str],
    now: datetime.datetime | None = None,
) -> DaemonCerts:
    """Server certificate (SANs: `dns_names` + `ips` + localhost/127.0.0.1), client CA, client.

    Raises ValueError for an unusable CA or an invalid IP address.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    ca_pair = load_ca(ca)
    server_key = _new_key()
    server = _leaf_cert(
        server_key,
        f"dind {daemon_id}",
        ca_pair,
        now,
        ExtendedKeyUsageOID.SERVER_AUTH,
        _sans([*dns_names, "localhost"], [*ips, "127.0.0.1"]),
    )
    client_ca_key = _new_key()
    client_ca = _ca_cert(
        client_ca_key, f"dind {daemon_id} clients", now, issuer=ca_pair, lifetime=LEAF_LIFETIME
    )
    client_key = _new_key()
    client = _leaf_cert(
        client_key,
        f"dind {daemon_id} client",
        (client_ca, client_ca_key),
        now,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
    )
    client_ca_pem = _cert_pem(client_ca)
    return DaemonCerts(
        server=KeyPair(_cert_pem(server), _key_pem(server_key)),
        server_ca_pem=client_ca_pem,
        # The chain up to the manager CA lets any verifier that only knows the
        # manager CA check the client; dockerd itself trusts the client CA only.
        client=KeyPair(_cert_pem(client) + client_ca_pem, _key_pem(client_key)),
        client_ca_pem=ca.cert_pem,
    )


def server_cert_tar(certs: DaemonCerts, uid: int = 0, gid: int = 0) -> bytes:
    """A tar of `certs/server/{ca,cert,key}.pem` to unpack at `/` of the daemon's container.

    The key is 0600 and owned by `uid:gid` (the user dockerd runs as).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in ("certs", "certs/server"):
            info = tarfile.TarInfo(dirname)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755 if dirname == "certs" else 0o700
            info.uid, info.gid = uid, gid
            tar.addfile(info)
        files = (
            ("ca.pem", certs.server_ca_pem, 0o644),
            ("cert.pem", certs.server.cert_pem, 0o644),
            ("key.pem", certs.server.key_pem, 0o600),
        )
        # `ready` last: the container's wait loop starts dockerd once it exists,
        # and tar members are written in order, so the others are complete then.
        for filename, data, mode in (*files, ("ready", b"", 0o644)):
            info = tarfile.TarInfo(f"certs/server/{filename}")  # naming.SERVER_CERT_DIR
            info.size = len(data)
            info.mode = mode
            info.uid, info.gid = uid, gid
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
