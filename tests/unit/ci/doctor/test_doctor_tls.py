from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from dockmoat.ci.doctor import checks_tls as t
from dockmoat.ci.doctor.config import TlsSettings
from dockmoat.ci.doctor.facts import FileRead
from dockmoat.ci.doctor.model import Finding, Status
from support.pki import Issued, make_ca, make_leaf

NOW = datetime.now(UTC)
SETTINGS = TlsSettings(
    verify=True, ca=Path("ca.pem"), cert=Path("cert.pem"), key=Path("key.pem"), source="test"
)
CA = make_ca()
CLIENT = make_leaf(CA, "client", server=False)


def _files(
    ca: Issued, client: Issued, key_pem: bytes | None = None
) -> tuple[list[Finding], t.ClientMaterial]:
    return t.check_files(
        SETTINGS,
        FileRead("ca.pem", ca.cert_pem),
        FileRead("cert.pem", client.cert_pem),
        FileRead("key.pem", key_pem if key_pem is not None else client.key_pem),
        0o100600,
    )


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def test_matching_unexpired_material_is_all_ok() -> None:
    files, material = _files(CA, CLIENT)
    findings = files + t.check_client(material, NOW)
    assert [f.status for f in findings] == [Status.OK] * 4
    assert {f.check for f in findings} == {t.FILES, t.KEY_MATCH, t.CLIENT_CHAIN, t.EXPIRY}


def test_key_of_another_certificate_is_a_mismatch() -> None:
    other = make_leaf(CA, "other", server=False)
    _, material = _files(CA, CLIENT, key_pem=other.key_pem)
    found = _by_check(t.check_client(material, NOW))
    assert found[t.KEY_MATCH].status is Status.FAIL
    assert "not the key of cert.pem" in found[t.KEY_MATCH].detail


def test_certificate_of_another_ca_does_not_chain() -> None:
    stranger = make_leaf(make_ca("other-ca"), "client", server=False)
    _, material = _files(CA, stranger)
    # ca.pem vouches for the daemon; the daemon may trust another CA for clients, so
    # the verdict follows what the daemon did with the certificate.
    rejected = _by_check(t.check_client(material, NOW, accepted=False))[t.CLIENT_CHAIN]
    assert rejected.status is Status.FAIL
    assert "other-ca" in rejected.detail
    assert "rejected" in rejected.detail
    unknown = _by_check(t.check_client(material, NOW))[t.CLIENT_CHAIN]
    assert unknown.status is Status.WARN
    accepted = _by_check(t.check_client(material, NOW, accepted=True))[t.CLIENT_CHAIN]
    assert accepted.status is Status.OK
    assert "issued by CN=other-ca" in accepted.detail


def test_expired_soon_and_future_certificates() -> None:
    expired = make_leaf(
        CA, "c", server=False, start=NOW - timedelta(days=10), end=NOW - timedelta(days=1)
    )
    soon = make_leaf(CA, "c", server=False, end=NOW + timedelta(days=5))
    future = make_leaf(CA, "c", server=False, start=NOW + timedelta(days=2))
    for cert, status, words in (
        (expired, Status.FAIL, "expired"),
        (soon, Status.WARN, "expires"),
        (future, Status.FAIL, "valid only from"),
    ):
        _, material = _files(CA, cert)
        finding = _by_check(t.check_client(material, NOW))[t.EXPIRY]
        assert finding.status is status, finding
        assert words in finding.detail
    _, material = _files(CA, future)
    assert "NTP" in (_by_check(t.check_client(material, NOW))[t.EXPIRY].fix or "")


def test_missing_garbage_and_encrypted_files() -> None:
    findings, material = t.check_files(
        SETTINGS,
        FileRead("ca.pem", error="missing"),
        FileRead("cert.pem", b"not pem"),
        FileRead(
            "key.pem",
            CLIENT.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pw"),
            ),
        ),
        0o100600,
    )
    assert findings[0].status is Status.FAIL
    assert "missing" in findings[0].detail
    assert "not a PEM certificate" in findings[0].detail
    assert "encrypted" in findings[0].detail
    assert material == t.ClientMaterial(None, None, None)
    assert t.check_client(material, NOW) == []


def test_unreadable_file_says_permissions_and_loose_key_warns() -> None:
    findings, _ = t.check_files(
        SETTINGS,
        FileRead("ca.pem", CA.cert_pem),
        FileRead("cert.pem", error="Permission denied"),
        FileRead("key.pem", CLIENT.key_pem),
        0o100644,
    )
    assert findings[0].status is Status.FAIL
    assert "chmod u+r" in (findings[0].fix or "")
    assert findings[1].status is Status.WARN
    assert "chmod 600 key.pem" in (findings[1].fix or "")


def _der(cert: Issued) -> bytes:
    return cert.cert.public_bytes(serialization.Encoding.DER)


def test_server_certificate_sans() -> None:
    server = make_leaf(CA, "dind", server=True, dns=("docker", "*.ci.example"), ips=("127.0.0.1",))
    for host, covered in (
        ("docker", True),
        ("DOCKER", True),
        ("127.0.0.1", True),
        ("a.ci.example", True),
        ("a.b.ci.example", False),
        ("ci.example", False),
        ("dind", False),
        ("::1", False),
    ):
        found = _by_check(t.check_server(_der(server), host, [CA.cert], NOW))
        assert (found[t.SERVER_SAN].status is Status.OK) is covered, host
    found = _by_check(t.check_server(_der(server), "dind", [CA.cert], NOW))
    assert "docker, *.ci.example, 127.0.0.1" in found[t.SERVER_SAN].detail
    assert found[t.SERVER_CHAIN].status is Status.OK
    assert found[t.SERVER_EXPIRY].status is Status.OK


def test_server_certificate_without_sans_and_of_another_ca() -> None:
    bare = make_leaf(make_ca("elsewhere"), "docker", server=True)
    found = _by_check(t.check_server(_der(bare), "docker", [CA.cert], NOW))
    assert found[t.SERVER_SAN].status is Status.FAIL
    assert "SANs: none" in found[t.SERVER_SAN].detail
    assert found[t.SERVER_CHAIN].status is Status.FAIL


def test_garbage_server_certificate() -> None:
    assert t.check_server(b"junk", "docker", None, NOW)[0].status is Status.FAIL


def test_a_fresh_short_lived_certificate_is_not_expiring_soon() -> None:
    """dockmoat's DinD leaves last 30 days: fresh, fine; in their last quarter, a warning."""
    fresh = make_leaf(CA, "c", server=False, start=NOW - timedelta(hours=1),
                      end=NOW + timedelta(days=30))  # fmt: skip
    late = make_leaf(CA, "c", server=False, start=NOW - timedelta(days=24),
                     end=NOW + timedelta(days=6))  # fmt: skip
    yearly = make_leaf(CA, "c", server=False, start=NOW - timedelta(days=340),
                       end=NOW + timedelta(days=25))  # fmt: skip
    for cert, status in ((fresh, Status.OK), (late, Status.WARN), (yearly, Status.WARN)):
        _, material = _files(CA, cert)
        assert _by_check(t.check_client(material, NOW))[t.EXPIRY].status is status
