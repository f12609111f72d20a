"""Options, dockerd argv and the create body of a nested daemon (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.dind import naming, spec
from dockmoat.errors import ConfigError


def test_memory_units() -> None:
    assert spec.parse_memory("512m") == 512 * 1024**2
    assert spec.parse_memory("2G") == 2 * 1024**3
    assert spec.parse_memory(str(64 * 1024**2)) == 64 * 1024**2


@pytest.mark.parametrize("bad", ["", "1x", "-1m", "1.5g", "1m", "lots"])
def test_memory_refuses_garbage_and_tiny(bad: str) -> None:
    with pytest.raises(ConfigError):
        spec.parse_memory(bad)


@given(st.integers(min_value=6, max_value=10**6), st.sampled_from(["m", "M"]))
def test_memory_megabytes_roundtrip(value: int, unit: str) -> None:
    assert spec.parse_memory(f"{value}{unit}") == value * 1024**2


@pytest.mark.parametrize("bad", ["0", "abc", "2000", "-1"])
def test_cpus_refuses(bad: str) -> None:
    with pytest.raises(ConfigError):
        spec.parse_cpus(bad)


@pytest.mark.parametrize(
    "pool,ok",
    [
        ("base=10.123.0.0/16,size=24", True),
        ("base=10.123.0.0/16,size=8", False),
        ("base=10.123.0.1/16,size=24", False),
        ("10.0.0.0/8", False),
    ],
)
def test_address_pools(pool: str, ok: bool) -> None:
    if ok:
        assert spec.validate_address_pool(pool) == pool
    else:
        with pytest.raises(ConfigError):
            spec.validate_address_pool(pool)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image": ""},
        {"image": "a b"},
        {"pids_limit": 10},
        {"mtu": 100},
        {"cache": "../etc"},
        {"runtime": "sysbox runc"},
        {"storage_driver": "Overlay 2"},
        {"timeout": 0},
        {"address_pools": ("nope",)},
    ],
)
def test_options_refuse_bad_input(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        spec.DindOptions(**kwargs)  # type: ignore[arg-type]


def test_argv_is_mutual_tls_only() -> None:
    argv = spec.dockerd_argv(spec.DindOptions(), 1450)
    assert argv[0] == "dockerd"
    assert "--tlsverify" in argv
    hosts = [a for a in argv if a.startswith("--host=")]
    assert "--host=tcp://0.0.0.0:2376" in hosts
    assert not any(":2375" in h for h in hosts)  # never the unauthenticated port
    assert all(h.startswith(("--host=tcp://0.0.0.0:2376", "--host=unix://")) for h in hosts)
    assert "--mtu=1450" in argv
    assert "--data-root=/var/lib/docker" in argv


def test_argv_passes_pools_and_driver() -> None:
    options = spec.DindOptions(
        address_pools=("base=10.200.0.0/16,size=24",), storage_driver="vfs", rootless=True
    )
    argv = spec.dockerd_argv(options, 1500)
    assert "--default-address-pool=base=10.200.0.0/16,size=24" in argv
    assert "--storage-driver=vfs" in argv
    assert f"--data-root={spec.ROOTLESS_DATA_ROOT}" in argv
    assert not any(a.startswith("--host=unix") for a in argv)


def _config(**kwargs: object) -> dict[str, object]:
    return spec.container_config(
        spec.DindOptions(**kwargs),  # type: ignore[arg-type]
        instance="ci-1-abcd",
        network="dockmoat-dind-ci-1-abcd",
        image_entrypoint=["dockerd-entrypoint.sh"],
        volume="dockmoat-dind-ci-1-abcd-data",
        mtu=1500,
        container_labels={"a": "b"},
        volume_labels={"c": "d"},
    )


def test_container_config_limits_and_isolation() -> None:
    config = _config(memory=2 * 1024**3, cpus=1.5, pids_limit=1000)
    host = config["HostConfig"]
    assert isinstance(host, dict)
    assert host["Privileged"] is True
    assert host["Memory"] == host["MemorySwap"] == 2 * 1024**3
    assert host["NanoCpus"] == 1_500_000_000
    assert host["PidsLimit"] == 1000
    assert host["NetworkMode"] == "dockmoat-dind-ci-1-abcd"
    # Published on loopback only, at a port the engine picks.
    assert host["PortBindings"] == {"2376/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    (mount,) = host["Mounts"]
    assert mount["Type"] == "volume" and mount["Target"] == "/var/lib/docker"
    assert mount["VolumeOptions"] == {"Labels": {"c": "d"}}
    # The image's own entrypoint runs once the certificates arrived on stdin,
    # which is open for exactly one attach.
    assert config["Entrypoint"][:3] == ["/bin/sh", "-c", spec.RECEIVE_CERTS]  # type: ignore[index]
    assert config["OpenStdin"] is True and config["StdinOnce"] is True
    assert config["Cmd"][:2] == ["dockerd-entrypoint.sh", "dockerd"]  # type: ignore[index]
    assert "DOCKER_TLS_CERTDIR=" in config["Env"]  # type: ignore[operator]
    endpoints = config["NetworkingConfig"]["EndpointsConfig"]  # type: ignore[index]
    assert naming.ALIAS in endpoints["dockmoat-dind-ci-1-abcd"]["Aliases"]


def test_sysbox_replaces_privileged_other_runtimes_keep_it() -> None:
    host = _config(runtime="sysbox-runc")["HostConfig"]
    assert isinstance(host, dict)
    assert host["Privileged"] is False and host["Runtime"] == "sysbox-runc"
    # crun (or runc by name) runs the container as runc does: a nested dockerd needs
    # --privileged there, rootless or not.
    for options in ({"runtime": "crun"}, {"runtime": "crun", "rootless": True}, {}):
        host = _config(**options)["HostConfig"]
        assert isinstance(host, dict)
        assert host["Privileged"] is True, options
        assert host.get("Runtime") == options.get("runtime"), options


def test_rootless_without_privileged_gets_only_what_rootlesskit_needs() -> None:
    host = _config(rootless=True, unprivileged=True)["HostConfig"]
    assert isinstance(host, dict)
    assert host["Privileged"] is False
    assert host["CapAdd"] == ["SYS_ADMIN"]
    assert sorted(host["SecurityOpt"]) == ["apparmor=unconfined", "seccomp=unconfined"]
    assert host["MaskedPaths"] == [] and host["ReadonlyPaths"] == []  # systempaths=unconfined
    assert host["Devices"] == [
        {
            "PathOnHost": "/dev/net/tun",
            "PathInContainer": "/dev/net/tun",
            "CgroupPermissions": "rwm",
        }
    ]
    # Not for a dockerd running as root, which needs the privileged container.
    with pytest.raises(ConfigError, match="needs --rootless"):
        spec.DindOptions(unprivileged=True)
    # A pool's daemon stands in only for the same choice.
    assert (
        spec.DindOptions(rootless=True).shape()
        != spec.DindOptions(rootless=True, unprivileged=True).shape()
    )


def test_rootless_publishes_the_tls_port_through_rootlesskit() -> None:
    config = _config(rootless=True)
    env = config["Env"]
    assert isinstance(env, list)
    assert "DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS=-p 0.0.0.0:2376:2376/tcp" in env
    host = config["HostConfig"]
    assert isinstance(host, dict)
    (mount,) = host["Mounts"]
    assert mount["Target"] == spec.ROOTLESS_DATA_ROOT


def test_shape_ignores_per_job_parts() -> None:
    a = spec.DindOptions(cache="k", preload=("x",), timeout=10)
    b = spec.DindOptions()
    assert a.shape() == b.shape()
    assert spec.DindOptions(memory=10**9).shape() != b.shape()


def test_failure_report_keeps_the_telling_lines() -> None:
    from dockmoat.dind.diagnose import hint_for, telling_lines

    chatter = [
        f'time="t" level=info msg="[core] Channel change {i}" module=grpc' for i in range(40)
    ]
    error = 'time="t" level=error msg="Failed to GetDriver graph" driver=x'
    logs = "\n".join(
        [*chatter[:20], error, *chatter[20:], "failed to start daemon: driver not supported"]
    )
    lines = telling_lines(logs)
    assert lines == [error, "failed to start daemon: driver not supported"]
    assert "storage driver" in hint_for("\n".join(lines))
    assert "privileges" not in hint_for("\n".join(lines))
    assert telling_lines("\n".join(chatter), limit=3) == chatter[-3:]
    assert "common causes" in hint_for("")


ARGV = ["dockerd", "--host=tcp://0.0.0.0:2376", "--tlsverify"]


@pytest.mark.parametrize(
    ("entrypoint", "command"),
    [
        # No entrypoint: dockerd itself.
        ([], ARGV),
        # The official image's script and ours take `dockerd ...` as their arguments.
        (["dockerd-entrypoint.sh"], ["dockerd-entrypoint.sh", *ARGV]),
        (["/usr/local/bin/dind"], ["/usr/local/bin/dind", *ARGV]),
        (["tini", "--"], ["tini", "--", *ARGV]),
        # dockerd as the entrypoint: its own flags kept, no second "dockerd".
        (["dockerd"], ["dockerd", *ARGV[1:]]),
        (
            ["/usr/bin/dockerd", "--log-level=warn"],
            ["/usr/bin/dockerd", "--log-level=warn", *ARGV[1:]],
        ),
        (["docker-init", "--", "dockerd"], ["docker-init", "--", "dockerd", *ARGV[1:]]),
    ],
)
def test_daemon_command_starts_dockerd_with_our_arguments(
    entrypoint: list[str], command: list[str]
) -> None:
    assert spec.daemon_command(entrypoint, ARGV) == command


@pytest.mark.parametrize(
    "entrypoint",
    [
        ["/bin/sh", "-c", "dockerd"],
        ["bash", "-ec", "exec dockerd"],
        ["busybox", "sh", "-c", "dockerd"],
        ["dockerd", "--host=tcp://0.0.0.0:2375"],
        ["dockerd", "-H", "tcp://0.0.0.0:2375"],
        ["dockerd", "-Htcp://0.0.0.0:2375"],
        ["dockerd", "-DH", "tcp://0.0.0.0:2375"],
        ["dockerd", "--tls=false"],
        ["/usr/bin/dockerd", "--tlsverify=false"],
    ],
)
def test_daemon_command_refuses_what_would_lose_tls(entrypoint: list[str]) -> None:
    with pytest.raises(ValueError, match="entrypoint"):
        spec.daemon_command(entrypoint, ARGV)


def test_a_tap_device_failure_names_dev_net_tun() -> None:
    from dockmoat.dind.diagnose import hint_for

    log = (
        "[rootlesskit:parent] error: failed to setup network: setting up tap tap0: executing "
        "[[nsenter -t 31 -n -m -U --preserve-credentials ip tuntap add name tap0 mode tap]]"
    )
    assert "/dev/net/tun" in hint_for(log) and "0666" in hint_for(log)
    assert "/dev/net/tun" not in hint_for("level=error msg=overlay")
