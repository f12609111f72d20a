"""A network must not take over a host bridge (`com.docker.network.bridge.name`), nor a
subnet the host routes (`networks.subnet`).

On dockerd 20.10 a network created with `bridge.name: docker0` joins the default
bridge every tenant shares, and removing it deletes the host's docker0. The test
aims at a scratch bridge of its own, so that a regression cannot break the engine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import docker
import pytest
from policygw import Gateway
from rawdocker import call

from dockmoat.netinfo import host_routed_networks


@pytest.fixture
def scratch_bridge(unique_name: Callable[[str], str]) -> Iterator[str]:
    name = "dmbr" + unique_name("x")[-8:]  # interface names are at most 15 bytes
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    yield name
    subprocess.run(["ip", "link", "del", name], check=False)


def _networks(docker_client: docker.DockerClient, label: str) -> list[str]:
    return [n.name for n in docker_client.networks.list(filters={"label": label})]


def test_bridge_name_option_is_refused_and_no_network_exists(
    gateway: Gateway,
    scratch_bridge: str,
    unique_name: Callable[[str], str],
    docker_client: docker.DockerClient,
) -> None:
    label = unique_name("takeover")
    body = {"Name": unique_name("net"), "Labels": {"dmtest.label": label},
            "Options": {"com.docker.network.bridge.name": scratch_bridge}}  # fmt: skip
    status, answer = call(str(gateway.socket), "POST", "/v1.41/networks/create",
                          json.dumps(body).encode())  # fmt: skip
    try:
        assert status == 403, answer
        assert "networks.driver-options" in answer["message"]
        assert _networks(docker_client, f"dmtest.label={label}") == []
    finally:
        for network in docker_client.networks.list(filters={"label": f"dmtest.label={label}"}):
            network.remove()


def test_mtu_option_still_works_with_the_cli(
    gateway: Gateway, unique_name: Callable[[str], str], docker_client: docker.DockerClient
) -> None:
    label = unique_name("mtu")
    name = unique_name("net")
    done = subprocess.run(
        ["docker", "network", "create", "-o", "com.docker.network.driver.mtu=1400",
         "--label", f"dmtest.label={label}", name],
        env=gateway.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr
        made = docker_client.networks.list(filters={"label": f"dmtest.label={label}"})
        assert len(made) == 1
        assert made[0].attrs["Options"] == {"com.docker.network.driver.mtu": "1400"}
    finally:
        for network in docker_client.networks.list(filters={"label": f"dmtest.label={label}"}):
            network.remove()


def test_a_subnet_this_host_routes_is_refused_and_a_free_one_works(
    gateway: Gateway, unique_name: Callable[[str], str], docker_client: docker.DockerClient
) -> None:
    """Without `networks.subnet` dockerd creates a bridge on the host's uplink subnet
    (or over the name server or cloud metadata) and the host's own traffic to it goes
    into the bridge. The CLI sees the refusal; the engine has no such network."""
    uplink = next(
        n for n in host_routed_networks()
        if n.version == 4 and n.prefixlen < 32 and not n.is_loopback and not n.is_link_local
    )  # fmt: skip
    label = unique_name("subnet")
    try:
        for subnet, refused in ((str(uplink), True), ("10.99.7.0/24", False)):
            done = subprocess.run(
                ["docker", "network", "create", "--subnet", subnet, "--label",
                 f"dmtest.label={label}", unique_name("net")],
                env=gateway.env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            listed = docker_client.networks.list(filters={"label": f"dmtest.label={label}"})
            made = [n.attrs["IPAM"]["Config"][0]["Subnet"] for n in listed]
            if refused:
                assert done.returncode != 0 and "networks.subnet" in done.stderr, done.stderr
                assert made == []
            else:
                assert done.returncode == 0, done.stderr
                assert made == [subnet]
    finally:
        for network in docker_client.networks.list(filters={"label": f"dmtest.label={label}"}):
            network.remove()
