from pathlib import Path

from dockmoat.ci.doctor import checks_daemon as d
from dockmoat.ci.doctor.config import TlsSettings, parse_host
from dockmoat.ci.doctor.facts import ConnectError, RawResponse
from dockmoat.ci.doctor.model import Status, exit_status

UNIX = parse_host("unix:///var/run/docker.sock", "default", tls=False)
TCP = parse_host("tcp://10.1.2.3:2376", "DOCKER_HOST", tls=True)
TLS = TlsSettings(
    verify=True, ca=Path("/c/ca.pem"), cert=Path("/c/cert.pem"), key=Path("/c/key.pem"), source="x"
)

PING = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nServer: Docker/20.10.24 (linux)\r\n"
    b"Content-Length: 2\r\n\r\nOK"
)


def test_a_docker_ping_is_ok_and_reports_the_api_version() -> None:
    finding, api = d.check_reachable(UNIX, None, RawResponse(PING))
    assert finding.status is Status.OK
    assert api == "1.41"
    assert "unix socket /var/run/docker.sock" in finding.detail


def test_chunked_ping_is_read() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n\r\n"
    assert d.check_reachable(UNIX, None, RawResponse(data))[0].status is Status.OK


def test_plain_http_to_a_tls_port_says_to_turn_tls_on() -> None:
    data = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    finding, api = d.check_reachable(TCP, None, RawResponse(data))
    assert finding.status is Status.FAIL
    assert api is None
    assert "DOCKER_TLS_VERIFY=1" in (finding.fix or "")


def test_not_docker() -> None:
    assert (
        d.check_reachable(UNIX, None, RawResponse(b"SSH-2.0-OpenSSH\r\n"))[0].status is Status.FAIL
    )
    notfound = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert "HTTP 404" in d.check_reachable(UNIX, None, RawResponse(notfound))[0].detail


def test_each_connect_error_kind_gets_its_own_fix() -> None:
    fixes = set()
    for kind in (
        "missing",
        "refused",
        "permission",
        "timeout",
        "resolve",
        "tls-verify",
        "tls-plain-server",
        "tls-rejected",
        "unsupported",
    ):
        finding, _ = d.check_reachable(TCP, TLS, ConnectError(kind, "boom"))
        assert finding.status is Status.FAIL
        assert finding.fix
        fixes.add(finding.fix)
    # missing and refused share the "start the daemon" advice; the rest differ.
    assert len(fixes) >= 8


def test_default_socket_missing_says_start_docker() -> None:
    finding, _ = d.check_reachable(UNIX, None, ConnectError("missing", "No such file"))
    assert "systemctl start docker" in (finding.fix or "")


def test_transport() -> None:
    assert d.check_transport(UNIX, None) is None
    remote_plain = d.check_transport(parse_host("tcp://docker:2375", "x", tls=False), None)
    assert remote_plain is not None and remote_plain.status is Status.FAIL
    local_plain = d.check_transport(parse_host("tcp://127.0.0.1:2375", "x", tls=False), None)
    assert local_plain is not None and local_plain.status is Status.WARN
    no_verify = TlsSettings(verify=False, ca=TLS.ca, cert=TLS.cert, key=TLS.key, source="x")
    unverified = d.check_transport(TCP, no_verify)
    assert unverified is not None and unverified.status is Status.WARN
    verified = d.check_transport(TCP, TLS)
    assert verified is not None and verified.status is Status.OK


def test_storage_driver() -> None:
    assert (
        d.check_storage(
            {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}
        ).status
        is Status.OK
    )
    assert d.check_storage({"Driver": "vfs"}).status is Status.WARN
    nested = d.check_storage(
        {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "overlayfs"]]}
    )
    assert nested.status is Status.FAIL
    assert "/var/lib/docker" in (nested.fix or "")
    assert d.check_storage({"Driver": "devicemapper"}).status is Status.WARN
    no_dtype = {"Driver": "overlay2", "DriverStatus": [["Supports d_type", "false"]]}
    assert d.check_storage(no_dtype).status is Status.FAIL


def test_daemon_warnings_and_bridge_mtu() -> None:
    assert d.check_warnings({"Warnings": None}) is None
    found = d.check_warnings({"Warnings": ["WARNING: No swap limit support"]})
    assert found is not None and found.status is Status.WARN
    assert d.check_bridge_mtu(None, ("eth0", 1400)) is None
    big = d.check_bridge_mtu(1500, ("eth0", 1400))
    assert big is not None and big.status is Status.WARN and "1400" in (big.fix or "")
    fine = d.check_bridge_mtu(1400, ("eth0", 1500))
    assert fine is not None and fine.status is Status.OK


def test_exit_status() -> None:
    ok, _ = d.check_reachable(UNIX, None, RawResponse(PING))
    bad, _ = d.check_reachable(UNIX, None, ConnectError("refused", "x"))
    assert exit_status([ok]) == 0
    assert exit_status([ok, d.check_storage({"Driver": "vfs"})]) == 0
    assert exit_status([ok, bad]) == 1
