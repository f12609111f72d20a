"""Pure checks on TLS material: the client's files and the certificate the daemon presents.

Mirrors what the seed's "Verify TLS certificates" step finds by hand: files
present and readable, key matching the certificate, certificates chaining to the
CA, dates valid (a warning under 30 days left, or in the last quarter of a short-lived
certificate), and the server's SANs covering the host name the client dials (Go ignores
the CN since 1.15).
"""

from __future__ import annotations

import ipaddress
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from dockmoat.ci.doctor.config import TlsSettings
from dockmoat.ci.doctor.facts import FileRead
from dockmoat.ci.doctor.model import Finding, fail, ok, warn

FILES = "tls.files"
KEY_MATCH = "tls.key-match"
CLIENT_CHAIN = "tls.client-chain"
EXPIRY = "tls.expiry"
SERVER_CHAIN = "tls.server-chain"
SERVER_SAN = "tls.server-san"
SERVER_EXPIRY = "tls.server-expiry"

SOON = timedelta(days=30)
# Short-lived certificates (dockmoat's DinD leaves last 30 days) are "soon" only in their
# last quarter, never with less than this left.
SOON_AT_LEAST = timedelta(days=7)
_FROM_DIND = (
    "copy the daemon's client certificates there (for docker:dind the `client` folder of "
    "DOCKER_TLS_CERTDIR, e.g. /certs/client, shared read-only with the job)"
)


@dataclass(frozen=True, slots=True)
class ClientMaterial:
    """The parsed client files; a None member could not be read or parsed."""

    ca: list[x509.Certificate] | None
    cert: x509.Certificate | None
    key: PrivateKeyTypes | None


def check_files(
    settings: TlsSettings, ca: FileRead, cert: FileRead, key: FileRead, key_mode: int | None
) -> tuple[list[Finding], ClientMaterial]:
    """Presence, readability and format of ca.pem, cert.pem, key.pem."""
    problems: list[str] = []
    fixes: list[str] = []
    parsed_ca: list[x509.Certificate] | None = None
    parsed_cert: x509.Certificate | None = None
    parsed_key: PrivateKeyTypes | None = None
    for name, read in (("CA", ca), ("certificate", cert), ("key", key)):
        if read.data is None:
            problems.append(f"{name} {read.path}: {read.error}")
            if read.error and "ermission" in read.error:
                fixes.append(
                    f"make {read.path} readable by this user (`chmod u+r`, or run as its owner)"
                )
            else:
                fixes.append(_FROM_DIND)
    if ca.data is not None:
        try:
            parsed_ca = x509.load_pem_x509_certificates(ca.data)
        except ValueError as error:
            problems.append(f"CA {ca.path} is not a PEM certificate ({error})")
            fixes.append(_FROM_DIND)
    if cert.data is not None:
        try:
            parsed_cert = x509.load_pem_x509_certificate(cert.data)
        except ValueError as error:
            problems.append(f"certificate {cert.path} is not a PEM certificate ({error})")
            fixes.append(_FROM_DIND)
    if key.data is not None:
        try:
            parsed_key = serialization.load_pem_private_key(key.data, password=None)
        except TypeError:
            problems.append(f"key {key.path} is encrypted; the docker client needs it unencrypted")
            fixes.append(f"decrypt it: `openssl pkey -in {key.path} -out {key.path}`")
        except (ValueError, UnsupportedAlgorithm) as error:
            problems.append(f"key {key.path} is not a PEM private key ({error})")
            fixes.append(_FROM_DIND)
    material = ClientMaterial(parsed_ca, parsed_cert, parsed_key)
    findings: list[Finding] = []
    if problems:
        findings.append(fail(FILES, "; ".join(problems), "; ".join(dict.fromkeys(fixes))))
    else:
        findings.append(ok(FILES, f"ca.pem, cert.pem and key.pem readable ({settings.source})"))
    if key_mode is not None and key_mode & (stat.S_IRWXG | stat.S_IRWXO):
        findings.append(
            warn(
                FILES,
                f"{key.path} is readable by others (mode {stat.S_IMODE(key_mode):04o}): "
                "whoever reads it controls the daemon",
                f"`chmod 600 {key.path}`",
            )
        )
    return findings, material


def _public(key_or_cert: x509.Certificate | PrivateKeyTypes) -> bytes:
    public = key_or_cert.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issued_by(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def check_client(
    material: ClientMaterial, now: datetime, accepted: bool | None = None
) -> list[Finding]:
    """Key matches certificate, certificate chains to the CA, all dates valid.

    ca.pem is the CA of the daemon's certificate; the daemon may trust another CA for
    clients. So a client certificate not signed by ca.pem is judged by what the daemon
    did with it: `accepted` True (it answered), False (it rejected this client), None
    (not known: unreachable for another reason).
    """
    findings: list[Finding] = []
    cert, key, cas = material.cert, material.key, material.ca
    if cert is not None and key is not None:
        if _public(cert) == _public(key):
            findings.append(ok(KEY_MATCH, "key.pem is the key of cert.pem"))
        else:
            findings.append(
                fail(
                    KEY_MATCH,
                    f"key.pem is not the key of cert.pem ({_subject(cert)}): "
                    "the handshake fails with a key mismatch",
                    "use the key.pem generated together with this cert.pem "
                    "(the two come from the same `client` folder)",
                )
            )
    if cert is not None and cas:
        issuer = cert.issuer.rfc4514_string()
        if _issued_by(cert, cas):
            findings.append(ok(CLIENT_CHAIN, "cert.pem is signed by ca.pem"))
        elif accepted:
            findings.append(
                ok(
                    CLIENT_CHAIN,
                    f"cert.pem is issued by {issuer}, not by ca.pem; the daemon trusts that "
                    "client CA and accepted it",
                )
            )
        else:
            report = fail if accepted is False else warn
            consequence = (
                "and the daemon rejected it"
                if accepted is False
                else "; the daemon rejects it unless it trusts that CA for clients"
            )
            findings.append(
                report(
                    CLIENT_CHAIN,
                    f"cert.pem ({_subject(cert)}, issued by {issuer}) is not signed by ca.pem "
                    + consequence,
                    "use the ca.pem and client certificate of the same daemon; a DinD daemon that "
                    "restarted with an empty cert volume made a new CA, so copy its `client` "
                    "folder again",
                )
            )
    dated: list[tuple[str, x509.Certificate]] = [("cert.pem", cert)] if cert is not None else []
    dated += [("ca.pem", c) for c in cas or []]
    if dated:
        findings.append(_expiry(EXPIRY, dated, now))
    return findings


def _soon(lifetime: timedelta) -> timedelta:
    """How close to its end a certificate of this lifetime is worth a warning."""
    return min(SOON, max(SOON_AT_LEAST, lifetime / 4))


def _expiry(check: str, certs: list[tuple[str, x509.Certificate]], now: datetime) -> Finding:
    expired, early, soon = [], [], []
    for name, cert in certs:
        after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
        if after < now:
            expired.append(f"{name} expired {after:%Y-%m-%d %H:%M} UTC")
        elif before > now:
            early.append(f"{name} is valid only from {before:%Y-%m-%d %H:%M} UTC")
        elif after - now < _soon(after - before):
            soon.append(f"{name} expires {after:%Y-%m-%d} ({(after - now).days} days)")
    renew = (
        "issue new certificates (for docker:dind: empty its /certs volume and restart it, "
        "then copy the new client folder)"
    )
    if expired or early:
        fix = renew
        if early:
            fix += "; a certificate from the future means a wrong clock: check NTP on both sides"
        return fail(check, "; ".join(expired + early + soon), fix)
    if soon:
        return warn(check, "; ".join(soon), renew)
    last = min(c.not_valid_after_utc for _, c in certs)
    return ok(check, f"valid until {last:%Y-%m-%d}")


def san_covers(cert: x509.Certificate, host: str) -> bool:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        return address in names.get_values_for_type(x509.IPAddress)
    wanted = host.rstrip(".").lower()
    for name in names.get_values_for_type(x509.DNSName):
        pattern = name.rstrip(".").lower()
        if pattern == wanted:
            return True
        # A wildcard covers exactly one left-most label.
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _sans(cert: x509.Certificate) -> str:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "none"
    shown = [str(v) for v in names.get_values_for_type(x509.DNSName)]
    shown += [str(v) for v in names.get_values_for_type(x509.IPAddress)]
    return ", ".join(shown) or "none"


def check_server(
    der: bytes, host: str, cas: list[x509.Certificate] | None, now: datetime
) -> list[Finding]:
    """The certificate the daemon presented, read without trusting it."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as error:
        return [
            fail(
                SERVER_CHAIN,
                f"the daemon sent an unreadable certificate ({error})",
                "check the daemon's --tlscert",
            )
        ]
    findings: list[Finding] = []
    if cas:
        if _issued_by(cert, cas):
            findings.append(ok(SERVER_CHAIN, "the daemon's certificate is signed by ca.pem"))
        else:
            findings.append(
                fail(
                    SERVER_CHAIN,
                    f"the daemon's certificate ({_subject(cert)}, issued by "
                    f"{cert.issuer.rfc4514_string()}) is not signed by the client's ca.pem",
                    "copy ca.pem from the daemon you are talking to (its certs folder); a DinD "
                    "daemon restarted with a fresh cert volume has a new CA",
                )
            )
    if san_covers(cert, host):
        findings.append(
            ok(SERVER_SAN, f"the daemon's certificate names {host} (SANs: {_sans(cert)})")
        )
    else:
        findings.append(
            fail(
                SERVER_SAN,
                f"the daemon's certificate does not name {host} (SANs: {_sans(cert)}); clients "
                "refuse it with a hostname mismatch",
                "dial a name listed in the SANs (for docker:dind the service alias `docker` or the "
                f"container's name), or reissue the server certificate with {host} in its SANs "
                "(docker:dind adds its hostname and DOCKER_TLS_SAN=DNS:name,IP:addr)",
            )
        )
    findings.append(_expiry(SERVER_EXPIRY, [("the daemon's certificate", cert)], now))
    return findings
