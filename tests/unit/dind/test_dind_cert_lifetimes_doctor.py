"""The certificates `dind up` issues pass `doctor`'s expiry check on their first day
and for three quarters of their life; doctor warns only in the last quarter."""

from __future__ import annotations

import datetime

from cryptography import x509

from dockmoat.ci.doctor.checks_tls import _expiry
from dockmoat.dind import certs


def _issued() -> list[tuple[str, x509.Certificate]]:
    ca = certs.new_ca()
    daemon = certs.issue_daemon_certs(ca, "job-1", ["docker"], ["172.18.0.2"])
    return [
        ("server", x509.load_pem_x509_certificate(daemon.server.cert_pem)),
        ("client", x509.load_pem_x509_certificate(daemon.client.cert_pem)),
        ("client CA", x509.load_pem_x509_certificate(daemon.client_ca_pem)),
        ("manager CA", x509.load_pem_x509_certificate(ca.cert_pem)),
    ]


def test_fresh_dind_certificates_are_not_flagged() -> None:
    issued = _issued()
    now = datetime.datetime.now(datetime.UTC)
    for hours in (0, 1, 24):
        finding = _expiry("tls.expiry", issued, now + datetime.timedelta(hours=hours))
        assert finding.status == "ok", finding


def test_dind_leaves_warn_only_in_their_last_quarter() -> None:
    issued = _issued()
    now = datetime.datetime.now(datetime.UTC)
    lifetime = certs.LEAF_LIFETIME
    late = _expiry("tls.expiry", issued, now + lifetime * 0.7)
    assert late.status == "ok", late
    last_quarter = _expiry("tls.expiry", issued, now + lifetime * 0.8)
    assert last_quarter.status == "warn", last_quarter
