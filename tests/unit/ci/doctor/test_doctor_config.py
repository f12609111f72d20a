from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.ci.doctor.config import parse_host, resolve
from dockmoat.errors import ConfigError

HOME = Path("/home/alice")


def test_default_is_the_local_socket() -> None:
    config = resolve(host=None, env={}, home=HOME)
    assert config.target.url == "unix:///var/run/docker.sock"
    assert config.target.source == "default"
    assert config.tls is None


def test_flag_beats_environment() -> None:
    config = resolve(host="unix:///run/x.sock", env={"DOCKER_HOST": "tcp://a:1"}, home=HOME)
    assert (config.target.path, config.target.source) == ("/run/x.sock", "--host")


def test_environment_tls_like_the_docker_cli() -> None:
    env = {
        "DOCKER_HOST": "tcp://docker",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": "/certs/client",
    }
    config = resolve(host=None, env=env, home=HOME)
    assert config.target.port == 2376
    assert config.tls is not None
    assert config.tls.verify
    assert config.tls.ca == Path("/certs/client/ca.pem")
    assert config.tls.key == Path("/certs/client/key.pem")


def test_plain_tcp_defaults_to_2375_and_home_docker_for_certs() -> None:
    assert resolve(host="tcp://10.0.0.1", env={}, home=HOME).target.port == 2375
    config = resolve(host="tcp://h:9", env={}, home=HOME, tlsverify=True)
    assert config.tls is not None
    assert config.tls.cert == HOME / ".docker" / "cert.pem"


def test_explicit_file_flags_turn_tls_on() -> None:
    config = resolve(host="tcp://h:1", env={}, home=HOME, tlscacert=Path("/x/ca.pem"))
    assert config.tls is not None
    assert not config.tls.verify
    assert config.tls.ca == Path("/x/ca.pem")


def test_ipv6_host() -> None:
    target = parse_host("tcp://[::1]:2376", "--host", tls=True)
    assert (target.host, target.port, target.url) == ("::1", 2376, "tcp://[::1]:2376")


@pytest.mark.parametrize(
    "url",
    [
        "foo://x",
        "unix://relative",
        "tcp://",
        "tcp://h:notaport",
        "tcp://h:1/path",
        "/var/run/docker.sock",
    ],
)
def test_bad_hosts_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="bad docker host"):
        parse_host(url, "--host", tls=False)


def test_foreign_transports_are_kept_for_the_report() -> None:
    assert parse_host("ssh://me@box", "DOCKER_HOST", tls=False).scheme == "ssh"


@given(st.text(max_size=60))
def test_any_text_parses_or_is_a_config_error(url: str) -> None:
    try:
        target = parse_host(url, "--host", tls=False)
    except ConfigError:
        return
    assert target.scheme in ("unix", "tcp", "ssh", "npipe", "fd")
