"""This machine's network facts that more than one command needs (read-only, Linux)."""

from __future__ import annotations

from pathlib import Path


def default_route_iface(routes: str) -> str | None:
    """The interface of the default route in /proc/net/route."""
    for line in routes.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
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
