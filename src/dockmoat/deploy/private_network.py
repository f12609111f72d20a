"""Plain-TCP listeners on a private container network: the explicit opt-in that lets
dockmoat replace a socket proxy reached as `tcp://socket-proxy:2375` (docs/deploy.md).

`serve --private-network-port PORT` listens on PORT at each private address of this
network namespace, never on a wildcard, and refuses when the namespace looks like a
host's rather than a container's: an interface with a public address, or Docker's own
bridge (`docker0`), which only the host's namespace holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from dockmoat.errors import ConfigError

_SIOCGIFADDR = 0x8915
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ipv4_of(name: str) -> ipaddress.IPv4Address | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError:
            return None
    return ipaddress.IPv4Address(packed[20:24])


def _ipv6_lines(text: str) -> Iterable[tuple[str, ipaddress.IPv6Address]]:
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 6 and len(fields[0]) == 32:
            yield fields[5], ipaddress.IPv6Address(int(fields[0], 16))


def interface_addresses() -> list[tuple[str, Address]]:
    """(interface, address) of this network namespace: IPv4 via ioctl, IPv6 from /proc."""
    found: list[tuple[str, Address]] = []
    for _index, name in socket.if_nameindex():
        v4 = _ipv4_of(name)
        if v4 is not None:
            found.append((name, v4))
    with contextlib.suppress(OSError):
        found.extend(_ipv6_lines(Path("/proc/net/if_inet6").read_text()))
    return found


def private_listen_urls(port: int, addresses: Sequence[tuple[str, Address]]) -> list[str]:
    """`tcp://ADDR:PORT` for each private, non-loopback, non-link-local address.

    Pure. ConfigError when the namespace is not a private container network.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"--private-network-port {port}: not a TCP port")
    urls: list[str] = []
    for name, address in addresses:
        if address.is_loopback or address.is_link_local:
            continue
        if name == "docker0":
            raise ConfigError(
                "--private-network-port: this network namespace holds docker0, so it is "
                "the host's, not a container network's; use a unix socket or mutual TLS"
            )
        if not address.is_private:
            raise ConfigError(
                f"--private-network-port: {name} has the public address {address}; plain "
                "TCP is only for a private container network (use mutual TLS instead)"
            )
        host = f"[{address}]" if address.version == 6 else str(address)
        urls.append(f"tcp://{host}:{port}")
    if not urls:
        raise ConfigError("--private-network-port: no private address to listen on")
    return urls
