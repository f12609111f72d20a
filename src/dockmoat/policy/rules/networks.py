"""Rules on networks."""

from __future__ import annotations

from dockmoat.policy.decision import Decision
from dockmoat.policy.rules.base import ALLOW, Rule, Subject, deny, obj, string_map, text, top

DRIVERS = frozenset({"", "bridge", "overlay"})
#: Driver options a job may set. Everything else is refused: above all
#: `com.docker.network.bridge.name`, which makes the new network take over an
#: existing host bridge such as docker0 (shared by every tenant; removing the
#: network then deletes the host's default bridge, seen on dockerd 20.10).
DRIVER_OPTIONS = frozenset(
    {
        "com.docker.network.driver.mtu",
        "com.docker.network.bridge.enable_icc",
        "com.docker.network.bridge.enable_ip_masquerade",
    }
)
IPAM_DRIVERS = frozenset({"", "default"})


def check_driver(subject: Subject) -> Decision:
    body = top(subject)
    driver = text(body, "Driver", "") or ""
    if driver not in DRIVERS:
        return deny(
            "networks.driver",
            f"a network with the driver {driver!r}",
            "Create bridge networks",
        )
    return ALLOW


def check_driver_options(subject: Subject) -> Decision:
    body = top(subject)
    for key in string_map(body, "Options", ""):
        if key not in DRIVER_OPTIONS:
            return deny(
                "networks.driver-options",
                f"the network driver option {key[:120]!r}",
                "Set only " + ", ".join(sorted(DRIVER_OPTIONS)),
            )
    ipam = obj(body, "IPAM", "")
    if ipam is not None:
        driver = text(ipam, "Driver", "IPAM.") or ""
        if driver not in IPAM_DRIVERS or string_map(ipam, "Options", "IPAM."):
            return deny(
                "networks.driver-options",
                f"the IPAM driver {driver!r} with options",
                "Use the default IPAM driver without options",
            )
    return ALLOW


RULES: tuple[Rule, ...] = (
    Rule(
        "networks.driver",
        "networks",
        frozenset({"networks.create"}),
        "macvlan, ipvlan and plugin networks attach containers to the host's interfaces.",
        check_driver,
    ),
    Rule(
        "networks.driver-options",
        "networks",
        frozenset({"networks.create"}),
        "Driver options can take over a host bridge such as docker0 or hand IPAM to a plugin.",
        check_driver_options,
    ),
)
