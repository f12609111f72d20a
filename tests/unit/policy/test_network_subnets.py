"""`networks.subnet`: no bridge on a subnet the host routes (metadata, name server,
uplink), read from /proc at start-up by `netinfo.routed_networks`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

import pytest

from dockmoat.api.request import ApiRequest
from dockmoat.netinfo import routed_networks
from dockmoat.policy.decision import Allow, Deny
from dockmoat.policy.engine import CompiledPolicy

ROUTE = """Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0
docker0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
br-0123456789ab	00001CAC	00000000	0001	0	0	0	0000FFFF	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
br-lan	0001A8C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
"""
IPV6_ROUTE = (
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n"
    "ff000000000000000000000000000000 08 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
)
RESOLV = "search example\nnameserver 10.255.255.53\nnameserver 127.0.0.53\n"


def test_routes_without_defaults_docker_bridges_or_multicast() -> None:
    assert set(routed_networks(ROUTE, IPV6_ROUTE, RESOLV)) == {
        ip_network("169.254.169.254/32"), ip_network("127.0.0.0/8"),
        ip_network("192.0.2.0/24"), ip_network("fd00::/64"), ip_network("10.255.255.53/32"),
        ip_network("192.168.1.0/24"),  # a host bridge named like Docker's, but not Docker's
    }  # fmt: skip


def test_unreadable_or_odd_lines_are_skipped() -> None:
    odd = "Iface\theader\neth0\tzz\t0\t0\t0\t0\t0\tFFFFFFFF\n"
    assert set(routed_networks(odd, "garbage line\n", "nameserver not-an-ip\n")) == {
        ip_network("169.254.169.254/32"), ip_network("127.0.0.0/8"),
    }  # fmt: skip


@pytest.fixture
def routed(baseline: CompiledPolicy) -> CompiledPolicy:
    host = routed_networks(ROUTE, IPV6_ROUTE, RESOLV)
    settings = dataclasses.replace(baseline.settings, host_networks=host)
    return dataclasses.replace(baseline, settings=settings)


def _create(make_request: Callable[..., ApiRequest], *configs: dict[str, Any]) -> ApiRequest:
    body = {"Name": "n", "IPAM": {"Driver": "default", "Config": list(configs)}}
    return make_request("POST", "/v1.41/networks/create", body)


@pytest.mark.parametrize(
    "config",
    [
        {"Subnet": "169.254.0.0/16"},  # cloud metadata
        {"Subnet": "10.255.255.0/24"},  # the name server
        {"Subnet": "192.0.2.128/25"},  # inside the uplink's subnet
        {"Subnet": "192.0.0.0/8"},  # around it
        {"Subnet": "10.99.0.0/16", "IPRange": "10.99.1.0/24", "Gateway": "192.0.2.1"},
        {"Subnet": "127.1.0.0/16"},
        {"Subnet": "fd00::/48"},
        {"Subnet": "10.99.0.0/33"},  # not a CIDR: refused, never guessed
    ],
)
def test_subnets_the_host_routes_are_refused(
    config: dict[str, Any], routed: CompiledPolicy, make_request: Callable[..., ApiRequest]
) -> None:
    decision = routed.evaluate(_create(make_request, config))
    assert isinstance(decision, Deny) and decision.rule == "networks.subnet", decision


@pytest.mark.parametrize(
    "configs",
    [
        (),
        ({"Subnet": "10.99.0.0/24"},),
        ({"Subnet": "172.17.0.0/16"},),  # docker0's: dockerd itself refuses the overlap
        ({"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.1"}, {"Subnet": "fd99::/64"}),
    ],
)
def test_free_subnets_pass(
    configs: tuple[dict[str, Any], ...],
    routed: CompiledPolicy,
    make_request: Callable[..., ApiRequest],
) -> None:
    assert isinstance(routed.evaluate(_create(make_request, *configs)), Allow)
