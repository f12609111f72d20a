"""The image's helpers without an engine: private-network listeners, the health check's
reading of serve's command line and its ping, the DinD certificate layout, the build
record behind `dockmoat --version`, and the image's requirements kept to uv.lock."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from dockmoat.buildinfo import describe
from dockmoat.deploy import dind_certs, health
from dockmoat.deploy.private_network import private_listen_urls
from dockmoat.errors import ConfigError
from dockmoat.gateway.config import build_settings, parse_listen

ROOT = Path(__file__).resolve().parents[3]
A = ipaddress.ip_address


def test_private_urls_skip_loopback_and_link_local() -> None:
    addresses = [("lo", A("127.0.0.1")), ("eth0", A("172.22.0.2")), ("eth0", A("fe80::1")),
                 ("eth1", A("fd00::5"))]  # fmt: skip
    assert private_listen_urls(2375, addresses) == ["tcp://172.22.0.2:2375", "tcp://[fd00::5]:2375"]


@pytest.mark.parametrize(
    ("addresses", "says"),
    [
        ([("eth0", A("8.8.4.4"))], "public address"),
        ([("eth0", A("10.0.0.4")), ("docker0", A("172.17.0.1"))], "docker0"),
        ([("lo", A("127.0.0.1"))], "no private address"),
    ],
)
def test_private_urls_refuse_a_host_namespace(
    addresses: list[tuple[str, ipaddress.IPv4Address]], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        private_listen_urls(2375, addresses)


def test_plain_tcp_on_a_private_address_needs_the_opt_in() -> None:
    with pytest.raises(ConfigError, match="non-loopback"):
        parse_listen("tcp://172.22.0.2:2375", tls_cert=None, tls_key=None, tls_ca=None)
    ok = parse_listen(
        "tcp://172.22.0.2:2375", tls_cert=None, tls_key=None, tls_ca=None, private_network=True
    )
    assert ok.endpoint.tls is None
    for url in ("tcp://0.0.0.0:2375", "tcp://8.8.4.4:2375", "tcp://socket-proxy:2375"):
        with pytest.raises(ConfigError):
            parse_listen(url, tls_cert=None, tls_key=None, tls_ca=None, private_network=True)


def test_private_listeners_come_in_addition_to_the_given_ones() -> None:
    common = {
        "upstream": "unix:///var/run/docker.sock", "profile": "baseline", "policy_file": None,
        "allow_bind": (), "audit_log": None, "tls_cert": None, "tls_key": None, "tls_ca": None,
        "socket_group": None, "log_level": "info", "env": {},
    }  # fmt: skip
    only = build_settings(listen=(), private_listen=["tcp://10.1.2.3:2375"], **common)
    assert [item.endpoint.url for item in only.listeners] == ["tcp://10.1.2.3:2375"]
    both = build_settings(
        listen=["unix:///run/x/docker.sock"], private_listen=["tcp://10.1.2.3:2375"], **common
    )
    assert len(both.listeners) == 2
    with pytest.raises(ConfigError, match="twice"):
        build_settings(
            listen=["tcp://10.1.2.3:2375"], private_listen=["tcp://10.1.2.3:2375"], **common
        )


def test_health_reads_serve_listeners_from_its_command_line() -> None:
    argv = ["/opt/dockmoat/bin/python3", "/opt/dockmoat/bin/dockmoat", "serve",
            "--listen", "tcp://10.0.0.2:2375",
            "--listen=unix:///run/dockmoat/guarded/d.sock"]  # fmt: skip
    assert health.listen_urls(argv) == [
        "tcp://10.0.0.2:2375",
        "unix:///run/dockmoat/guarded/d.sock",
    ]
    assert health.listen_urls(["/opt/dockmoat/bin/dockmoat", "serve"]) == [health.DEFAULT_URL]
    assert health.listen_urls(["/opt/dockmoat/bin/dockmoat", "dind", "pool"]) is None
    assert health.listen_urls(["sleep", "serve"]) is None


def _answer_once(path: Path, answer: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(answer)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_health_ping_passes_on_200_and_fails_otherwise(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.sock", tmp_path / "bad.sock"
    _answer_once(good, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    _answer_once(bad, b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    assert health.ping(f"unix://{good}") is None
    assert "answered 502" in (health.ping(f"unix://{bad}") or "")
    assert "cannot connect" in (health.ping(f"unix://{tmp_path / 'none.sock'}") or "")
    assert health.main([f"unix://{tmp_path / 'none.sock'}"]) == 1


def test_dind_certs_have_the_official_layout_and_chain(tmp_path: Path) -> None:
    assert dind_certs.main([str(tmp_path), "DNS:dind", "IP:10.9.8.7"]) == 0
    for rel in ("ca/cert.pem", "server/ca.pem", "server/cert.pem", "server/key.pem",
                "client/ca.pem", "client/cert.pem", "client/key.pem"):  # fmt: skip
        assert (tmp_path / rel).is_file(), rel
    assert not (tmp_path / "ca/key.pem").exists()
    assert (tmp_path / "client/key.pem").stat().st_mode & 0o777 == 0o600
    server = x509.load_pem_x509_certificate((tmp_path / "server/cert.pem").read_bytes())
    sans = server.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert {"dind", "docker", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert A("10.9.8.7") in sans.get_values_for_type(x509.IPAddress)
    if shutil.which("openssl"):
        done = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "client/ca.pem"),
             str(tmp_path / "server/cert.pem")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert dind_certs.main([]) == 2


def test_version_names_the_commit_in_a_checkout() -> None:
    text = describe()
    assert text.startswith("0.1.0 (commit ")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if head:
        assert f"commit {head}" in text


def test_image_requirements_are_the_lock_export() -> None:
    uv = ROOT / ".cache/tools/bin/uv"
    if not uv.exists():
        pytest.skip("uv is installed by make setup")
    done = subprocess.run(
        [str(uv), "export", "--frozen", "--no-dev", "--no-emit-project", "--format",
         "requirements-txt", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout == (ROOT / "deploy/image/requirements.txt").read_text(), (
        "deploy/image/requirements.txt is stale: run `make image-requirements`"
    )
