"""Where a daemon-side fetch goes: registry hosts of image references, URL hosts.

dockerd itself connects out for pulls, pushes, `/auth`, URL imports and remote
build contexts; aimed at loopback, link-local or private addresses that turns the
daemon into a request forger inside the host's network (cloud metadata at
169.254.169.254, services bound to 127.0.0.1). Names are not resolved (no I/O):
literal addresses, every numeric form getaddrinfo accepts, `localhost` and
intranet-looking names count as internal; anything else is treated as public.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".lan", ".home.arpa")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # dockerd resolves through getaddrinfo, which also takes 127.1, 0x7f000001, ...
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def is_internal(host: str) -> bool:
    """Whether `host` (a name or a literal address, no port) is not a public place."""
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if "%" in host:  # an IPv6 zone only makes sense for link-local addresses
        return True
    address = _address(host)
    if address is None:
        return host == "localhost" or "." not in host or host.endswith(_INTERNAL_SUFFIXES)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
        or address.is_multicast
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED)
    )


def split_host_port(hostport: str) -> str:
    """The host of `host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    if hostport.startswith("["):
        return hostport[1 : hostport.find("]")] if "]" in hostport else hostport
    if hostport.count(":") == 1:
        return hostport.split(":", 1)[0]
    return hostport


def registry_of(reference: str) -> str | None:
    """The registry `host[:port]` of an image reference; None for Docker Hub.

    As the reference grammar has it: the first path component is a registry only
    when it has a dot or a colon or is `localhost`.
    """
    name = reference.split("@", 1)[0]
    if "/" not in name:
        return None
    first = name.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":
        return first
    return None


def url_host(url: str) -> str | None:
    """The host a URL (or scheme-less `host/path`, or `git@host:path`) points at."""
    if "://" not in url:
        if url.startswith("git@"):
            return url[4:].split(":", 1)[0] or None
        url = "http://" + url
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def url_allowed(url: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `url` starts with an allowlisted prefix that ends on a boundary."""
    for prefix in prefixes:
        if url == prefix:
            return True
        if url.startswith(prefix) and (prefix.endswith("/") or url[len(prefix)] in "/?#"):
            return True
    return False
