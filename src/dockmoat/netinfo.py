"""This machine's network facts that more than one command needs (read-only, Linux)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path


def _ipv4_routes(routes: str) -> Iterator[tuple[str, str, str]]:
    """(interface, destination, mask) of each route in /proc/net/route (hex, as there)."""
    for line in routes.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8:
            yield fields[0], fields[1], fields[7]


def default_route_iface(routes: str) -> str | None:
    """The interface of the default route in /proc/net/route."""
    for iface, destination, mask in _ipv4_routes(routes):
        if destination == "00000000" and mask == "00000000":
            return iface
    return None


def host_uplink() -> tuple[str, int] | None:
    """This machine's default-route interface and its MTU, or None when unknown."""
    try:
        iface = default_route_iface(Path("/proc/net/route").read_text())
        if iface is None:
            return None
        return iface, int(Path(f"/sys/class/net/{iface}/mtu").read_text())
    except (OSError, ValueError):
        return None


Network = IPv4Network | IPv6Network

# Link-local cloud metadata (AWS, GCP, Azure, OpenStack): a bridge on a subnet holding
# it takes the host's own route to it.
METADATA = ip_network("169.254.169.254/32")
LOOPBACK = ip_network("127.0.0.0/8")
# Docker's own interfaces (docker0, br-<12 hex> of user networks, veth<7 hex>):
# dockerd refuses overlapping pools itself, and their routes go when their networks
# go (a snapshot of them would refuse re-creating a subnet later). Exact names, so a
# host bridge such as OpenWrt's br-lan still counts.
_DOCKER_IFACE = re.compile(r"docker0|br-[0-9a-f]{12}|veth[0-9a-f]{7}")


def routed_networks(route: str, ipv6_route: str, resolv_conf: str) -> tuple[Network, ...]:
    """What the host reaches directly or must keep reaching: its routes except the
    default ones and Docker's own bridges, its name servers, loopback and cloud
    metadata.

    Pure: the texts of /proc/net/route, /proc/net/ipv6_route and /etc/resolv.conf.
    """
    found: dict[Network, None] = {METADATA: None, LOOPBACK: None}
    for iface, destination, mask in _ipv4_routes(route):
        if _DOCKER_IFACE.fullmatch(iface) or mask == "00000000":
            continue
        try:
            address = IPv4Address(int.from_bytes(bytes.fromhex(destination), "little"))
            netmask = IPv4Address(int.from_bytes(bytes.fromhex(mask), "little"))
            found[ip_network(f"{address}/{netmask}", strict=False)] = None
        except ValueError:
            continue
    for line in ipv6_route.splitlines():
        fields = line.split()
        if len(fields) < 10 or _DOCKER_IFACE.fullmatch(fields[9]) or fields[1] == "00":
            continue
        try:
            prefix = f"{IPv6Address(bytes.fromhex(fields[0]))}/{int(fields[1], 16)}"
            network = ip_network(prefix, strict=False)
        except ValueError:
            continue
        if not network.is_multicast:
            found[network] = None
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                server = ip_address(fields[1].split("%")[0])
            except ValueError:
                continue
            if not server.is_loopback:
                found[ip_network(server)] = None
    return tuple(found)


def host_routed_networks() -> tuple[Network, ...]:
    """`routed_networks` of this machine (what it can read of it)."""

    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    return routed_networks(
        read("/proc/net/route"), read("/proc/net/ipv6_route"), read("/etc/resolv.conf")
    )
