"""Start-up settings: parsed once, wrong ones refused loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockmoat.errors import ConfigError
from dockmoat.gateway.config import parse_listen, parse_upstream
from dockmoat.gateway.server import remote_upstream_warning
from support.serve_settings import settings


def test_defaults() -> None:
    built = settings()
    assert built.listeners[0].endpoint.url == "unix:///run/dockmoat/docker.sock"  # type: ignore[attr-defined]
    assert built.upstream.url == "unix:///var/run/docker.sock"  # type: ignore[attr-defined]


def test_docker_host_is_the_default_upstream() -> None:
    assert parse_upstream(None, {"DOCKER_HOST": "unix:///x.sock"}).path == Path("/x.sock")
    up = parse_upstream(None, {"DOCKER_HOST": "tcp://10.0.0.1:2375"})
    assert (up.host, up.port, up.tls) == ("10.0.0.1", 2375, None)


def test_upstream_tls_needs_the_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_upstream(
            "tcp://h:2376", {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
        )
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    up = parse_upstream(
        "tcp://h:2376", {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
    )
    assert up.tls is not None and up.tls.verify


@pytest.mark.parametrize("url", ["tcp://0.0.0.0:2375", "tcp://10.1.2.3:2375", "tcp://[::]:2375"])
def test_non_loopback_tcp_needs_mtls(url: str) -> None:
    with pytest.raises(ConfigError, match="mutual TLS"):
        parse_listen(url, tls_cert=None, tls_key=None, tls_ca=None)


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:2375", "tcp://localhost:2375", "tcp://[::1]:1"])
def test_loopback_tcp_is_fine(url: str) -> None:
    assert parse_listen(url, tls_cert=None, tls_key=None, tls_ca=None).endpoint.kind == "tcp"


@pytest.mark.parametrize(
    "url", ["unix://relative.sock", "http://x", "tcp://host", "tcp://h:99999", "tcp://h:1/path"]
)
def test_bad_listen_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(url, tls_cert=None, tls_key=None, tls_ca=None)


def test_partial_tls_flags_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="go together"):
        parse_listen("tcp://0.0.0.0:1", tls_cert=tmp_path / "c", tls_key=None, tls_ca=None)
    with pytest.raises(ConfigError, match="does not exist"):
        parse_listen("tcp://0.0.0.0:1", tls_cert=tmp_path / "c", tls_key=tmp_path / "k",
                     tls_ca=tmp_path / "a")  # fmt: skip


def test_duplicate_listen_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        settings(listen=("unix:///a.sock", "unix:///a.sock"))
    with pytest.raises(ConfigError):
        settings(policy_file=tmp_path / "missing.yaml")
    with pytest.raises(ConfigError):
        settings(idle_timeout=0)


@pytest.mark.parametrize(
    ("upstream", "profile", "warned"),
    [
        ("tcp://10.1.2.3:2375", "baseline", True),
        ("tcp://docker.example:2375", "restricted", True),
        ("tcp://10.1.2.3:2375", "permissive", False),  # nothing is checked there
        ("tcp://127.0.0.1:2375", "baseline", False),
        ("tcp://localhost:2375", "baseline", False),
        ("tcp://[::1]:2375", "baseline", False),
        ("unix:///var/run/docker.sock", "baseline", False),
    ],
)
def test_serve_warns_when_the_daemon_may_be_elsewhere(
    upstream: str, profile: str, warned: bool
) -> None:
    warning = remote_upstream_warning(settings(upstream=upstream, profile=profile))
    assert (warning is not None) == warned
    if warned:
        assert warning is not None and upstream in warning and "networks.subnet" in warning
