"""`dockmoat dind up/env/ls/logs/down` on the real engine with the local DinD image."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from dindtest_support import Dind

from dockmoat.dind import naming
from dockmoat.dind.info import DindInfo
from dockmoat.netinfo import host_uplink

DOCKERFILE = """\
FROM dockmoat-test/busybox:latest
RUN echo built-in-dind > /hello
CMD ["cat", "/hello"]
"""


def test_up_build_run_refuse_down(
    dind: Dind, dind_name: Callable[[], str], busybox_image: str
) -> None:
    name = dind_name()
    up = dind.cli(
        "dind",
        "up",
        name,
        "--image",
        dind.image,
        "--preload",
        busybox_image,
        "--format",
        "json",
        "--no-pool",
    )
    info = DindInfo.from_json(json.loads(up.stdout))
    assert "waiting for /_ping" in up.stderr  # progress went to stderr, not stdout

    # The nested daemon is a different daemon: only the preloaded image, nothing of the host's.
    images = dind.docker(info, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert images == [busybox_image]

    # Nested build and run over mutual TLS, with the current and the 20.10 CLI.
    dind.docker(info, "build", "-t", "dmtest-nested:1", "-", input=DOCKERFILE)
    run = dind.docker(info, "run", "--rm", "dmtest-nested:1")
    assert run.stdout.strip() == "built-in-dind"
    assert dind.docker(info, "ps", "-q", cli="/usr/bin/docker").returncode == 0

    # The context `dockmoat-NAME` works with both CLIs.
    for cli in ("docker", "/usr/bin/docker"):
        out = subprocess.run(
            [cli, "--context", f"dockmoat-{name}", "images", "--format", "{{.Repository}}"],
            capture_output=True,
            text=True,
            env=dind.env(),
            check=True,
        )
        assert "dmtest-nested" in out.stdout

    # A client without the client certificate is refused ...
    no_cert = subprocess.run(
        [
            "docker",
            "-H",
            info.host_url,
            "--tlsverify",
            f"--tlscacert={info.cert_path / 'ca.pem'}",
            "version",
        ],
        capture_output=True,
        text=True,
        env=dind.env(),
        check=False,
    )
    assert no_cert.returncode != 0
    assert "Server:" not in no_cert.stdout
    # ... and so is plain HTTP on the TLS port.
    with socket.create_connection(("127.0.0.1", info.port), timeout=5) as sock:
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"\r\n\r\nOK" not in sock.recv(4096)

    # `env` prints the same environment; `ls` shows it; `logs` has dockerd's log.
    env = dind.cli("dind", "env", name).stdout
    assert f"DOCKER_HOST={info.host_url}; export DOCKER_HOST" in env
    assert name in dind.cli("dind", "ls").stdout
    assert (
        "API listen on"
        in dind.cli("dind", "logs", name).stdout + dind.cli("dind", "logs", name).stderr
    )

    before = dind.instance_resources(info.instance)
    assert before["containers"] == [naming.container_name(name)]
    assert before["networks"] == [info.network]
    assert before["volumes"] == [naming.data_volume_name(info.instance)]

    down = dind.cli("dind", "down", name)
    assert "removed container" in down.stdout
    assert dind.instance_resources(info.instance) == {
        "containers": [],
        "networks": [],
        "volumes": [],
    }
    assert not info.cert_path.exists()
    ctx = subprocess.run(
        ["docker", "context", "inspect", f"dockmoat-{name}"],
        capture_output=True,
        text=True,
        env=dind.env(),
        check=False,
    )
    assert ctx.returncode != 0


def test_another_daemons_certificate_is_refused(dind: Dind, dind_name: Callable[[], str]) -> None:
    a = dind.up(dind_name())
    b = dind.up(dind_name())
    # Same manager CA, but each daemon trusts only its own client CA.
    context = ssl.create_default_context(cafile=str(a.cert_path / "ca.pem"))
    context.load_cert_chain(b.cert_path / "cert.pem", b.cert_path / "key.pem")
    with (
        socket.create_connection(("127.0.0.1", a.port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        tls.recv(100)
    # With its own certificate, b's client gets in to b.
    assert dind.docker(b, "version", "--format", "{{.Server.Version}}").stdout.strip()


def test_default_mtu_is_never_wider_than_the_way_out(
    dind: Dind, dind_name: Callable[[], str]
) -> None:
    """Without --mtu: the engine bridge's MTU, or this host's uplink when that is smaller
    (this machine: docker0 1500, uplink 1400, where a wider nested bridge drops packets)."""
    bridge = dind.client.api.inspect_network("bridge")
    expected = int((bridge.get("Options") or {}).get("com.docker.network.driver.mtu", 1500))
    uplink = host_uplink()
    if uplink is not None:
        expected = min(expected, uplink[1])
    info = dind.up(dind_name())
    assert f"--mtu={expected}" in dind.client.api.inspect_container(info.container_id)["Args"]
    network = dind.client.api.inspect_network(info.network)
    assert network["Options"]["com.docker.network.driver.mtu"] == str(expected)


def test_limits_and_mtu_reach_the_engine(dind: Dind, dind_name: Callable[[], str]) -> None:
    info = dind.up(dind_name(), memory=768 * 1024**2, cpus=1.5, pids_limit=2000, mtu=1400)
    details = dind.client.api.inspect_container(info.container_id)
    host = details["HostConfig"]
    assert host["Memory"] == 768 * 1024**2
    assert host["NanoCpus"] == 1_500_000_000
    assert host["PidsLimit"] == 2000
    assert host["Privileged"] is True
    assert host["PortBindings"]["2376/tcp"][0]["HostIp"] == "127.0.0.1"
    assert "--mtu=1400" in details["Args"]
    network = dind.client.api.inspect_network(info.network)
    assert network["Options"]["com.docker.network.driver.mtu"] == "1400"
    nested_info = json.loads(dind.docker(info, "info", "--format", "{{json .}}").stdout)
    assert nested_info["Driver"] == "overlay2"  # thanks to the named data volume


def test_missing_image_fails_fast_and_creates_nothing(
    dind: Dind, dind_name: Callable[[], str]
) -> None:
    name = dind_name()
    result = dind.cli(
        "dind", "up", name, "--image", "dmtest-no-such-image:never", "--no-pool", check=False
    )
    assert result.returncode != 0
    assert "does not pull" in result.stderr
    assert (
        dind.client.containers.list(all=True, filters={"name": naming.container_name(name)}) == []
    )
    assert not (dind.state_dir / "daemons").exists() or not any(
        (dind.state_dir / "daemons").iterdir()
    )


def test_rootless_needs_a_rootless_image(dind: Dind, dind_name: Callable[[], str]) -> None:
    result = dind.cli(
        "dind", "up", dind_name(), "--image", dind.image, "--rootless", "--no-pool", check=False
    )
    assert result.returncode == 2
    assert "rootless DinD image" in result.stderr


def test_name_taken_is_refused(dind: Dind, dind_name: Callable[[], str]) -> None:
    name = dind_name()
    dind.up(name)
    again = dind.cli("dind", "up", name, "--image", dind.image, "--no-pool", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_unknown_daemon_is_a_clear_error(dind: Dind, dind_name: Callable[[], str]) -> None:
    result = dind.cli("dind", "down", dind_name(), check=False)
    assert result.returncode == 1 and "no dind daemon named" in result.stderr


def _bridge_address(network: dict[str, Any]) -> str:
    """The default bridge's own address: IPAM's Gateway when the daemon reports one
    (it does not when it created docker0 itself), else the interface's address."""
    config = network["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    interface = network["Options"]["com.docker.network.bridge.name"]
    shown = subprocess.run(["ip", "-j", "-4", "addr", "show", interface],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return str(json.loads(shown.stdout)[0]["addr_info"][0]["local"])


def test_publish_address_for_clients_beyond_loopback(
    dind: Dind, dind_name: Callable[[], str]
) -> None:
    """A remote engine's clients need a reachable address; here: the host's docker0 address."""
    gateway = _bridge_address(dind.client.networks.get("bridge").attrs)
    name = dind_name()
    up = dind.cli(
        "dind",
        "up",
        name,
        "--image",
        dind.image,
        "--publish-address",
        gateway,
        "--format",
        "json",
        "--no-pool",
    )
    info = DindInfo.from_json(json.loads(up.stdout))
    assert info.host_url.startswith(f"tcp://{gateway}:")
    binding = dind.client.api.inspect_container(info.container_id)["HostConfig"]["PortBindings"][
        "2376/tcp"
    ]
    assert binding == [{"HostIp": gateway, "HostPort": ""}]
    # The server certificate names that address, so verification passes.
    assert dind.docker(info, "version", "--format", "{{.Server.Version}}").stdout.strip()
