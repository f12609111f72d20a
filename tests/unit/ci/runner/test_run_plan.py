from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.ci.runner.modes import host_socket_path
from dockmoat.ci.runner.options import WIRED, make_options, parse_env
from dockmoat.ci.runner.plan import (
    LABEL_MODE,
    LABEL_RUN,
    WORKDIR,
    dind_wiring,
    guarded_wiring,
    job_spec,
    socket_wiring,
    summary,
)
from dockmoat.errors import ConfigError

WS = Path("/srv/ws")


def _options(**extra: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {
        "mode": "socket",
        "command": ("sh", "pipeline.sh"),
        "workspace": WS,
    }
    values.update(extra)
    return make_options(**values)


def test_defaults() -> None:
    options = _options()
    assert options.image == "docker:27-cli"
    assert options.dind_image == "docker:27-dind"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"command": ()}, "after `--`"),
        ({"mode": "raw"}, "mode"),
        ({"image": "bad image"}, "invalid image reference"),
        ({"workspace": Path("/a:b")}, "without ':'"),
        ({"workspace": Path("rel")}, "absolute"),
        ({"preload": ("busybox",)}, "only with --mode dind"),
        ({"rootless": True}, "only with --mode dind"),
        ({"mode": "guarded", "runtime": "crun"}, "only with --mode dind"),
        ({"mode": "dind", "unprivileged": True}, "needs --rootless"),
    ],
)
def test_bad_options_are_one_config_error(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _options(**extra)


def test_env_like_docker_run() -> None:
    assert parse_env(("A=1", "B=", "C", "D"), {"C": "from-env"}) == (
        ("A", "1"),
        ("B", ""),
        ("C", "from-env"),
    )
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_env(("1A=x",), {})


@pytest.mark.parametrize("key", sorted(WIRED))
def test_env_may_not_rewire_docker(key: str) -> None:
    with pytest.raises(ConfigError, match="set by the mode"):
        parse_env((f"{key}=tcp://evil:2375",), {})


def test_job_spec_mounts_the_workspace_as_working_directory() -> None:
    spec = job_spec(_options(env=(("X", "1"),)), "abcd1234", socket_wiring("/var/run/docker.sock"))
    assert spec.working_dir == WORKDIR == "/workspace"
    assert spec.binds[str(WS)] == {"bind": "/workspace", "mode": "rw"}
    assert spec.binds["/var/run/docker.sock"] == {"bind": "/var/run/docker.sock", "mode": "rw"}
    assert spec.env == {
        "X": "1",
        "DOCKER_HOST": "unix:///var/run/docker.sock",
        "DOCKMOAT_HOST_WORKSPACE": str(WS),
    }
    assert spec.labels == {LABEL_RUN: "abcd1234", LABEL_MODE: "socket"}
    assert spec.name == "dockmoat-run-abcd1234"
    assert spec.network is None
    assert spec.command == ["sh", "pipeline.sh"]


def test_host_workspace_only_where_the_host_daemon_is_used() -> None:
    env = {"DOCKER_HOST": "tcp://docker:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/c"}
    dind = job_spec(_options(mode="dind"), "x", dind_wiring("n", "/s", env))
    assert "DOCKMOAT_HOST_WORKSPACE" not in dind.env
    guarded = job_spec(_options(mode="guarded"), "x", guarded_wiring("/j.sock"))
    assert guarded.env["DOCKMOAT_HOST_WORKSPACE"] == str(WS)


def test_socket_wiring_warns_that_it_gives_away_root() -> None:
    notice = socket_wiring("/run/docker.sock").notice or ""
    assert "root on this host" in notice
    assert "/run/docker.sock" in notice


def test_dind_wiring_mounts_client_certificates_read_only() -> None:
    env = {
        "DOCKER_HOST": "tcp://docker:2376",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": "/certs/client",
    }
    wiring = dind_wiring("net-1", "/state/client", env)
    assert wiring.network == "net-1"
    assert wiring.binds == {"/state/client": {"bind": "/certs/client", "mode": "ro"}}
    assert wiring.env == env
    assert wiring.notice is None


def test_guarded_wiring_mounts_the_job_socket_as_the_docker_socket() -> None:
    wiring = guarded_wiring("/run/dockmoat/jobs/run-1.sock")
    assert wiring.binds == {
        "/run/dockmoat/jobs/run-1.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}
    }
    assert wiring.env == {"DOCKER_HOST": "unix:///var/run/docker.sock"}


def test_host_socket_path() -> None:
    assert host_socket_path("unix:///var/run/docker.sock") == "/var/run/docker.sock"
    with pytest.raises(ConfigError, match="not one"):
        host_socket_path("tcp://127.0.0.1:2375")


def test_summary_line() -> None:
    assert summary("dind", 3, 1.234, 5.0, 0.5) == (
        "dockmoat run: mode dind, exit 3; set-up 1.23s, job 5.00s, clean-up 0.50s"
    )


@given(
    st.dictionaries(
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), st.text(max_size=10), max_size=5
    )
)
def test_user_env_never_overrides_the_wiring(env: dict[str, str]) -> None:
    pairs = tuple((k, v) for k, v in env.items() if k not in WIRED)
    spec = job_spec(_options(env=pairs), "x", guarded_wiring("/j.sock"))
    assert spec.env["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    for key, value in pairs:
        if key != "DOCKER_HOST":
            assert spec.env[key] == value


@pytest.mark.parametrize(
    ("entrypoint", "sent"),
    [
        (None, None),  # the image's ENTRYPOINT runs with COMMAND as its arguments
        ("", [""]),  # cleared, as `docker run --entrypoint ""` sends it
        ("/bin/sh", ["/bin/sh"]),
    ],
)
def test_job_entrypoint(entrypoint: str | None, sent: list[str] | None) -> None:
    spec = job_spec(_options(entrypoint=entrypoint), "x", socket_wiring("/var/run/docker.sock"))
    assert spec.entrypoint == sent
    assert spec.command == ["sh", "pipeline.sh"]
