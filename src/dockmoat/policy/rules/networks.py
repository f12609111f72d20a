"""Rules on networks."""

from __future__ import annotations

from ipaddress import ip_network

from dockmoat.policy.decision import Decision
from dockmoat.policy.rules.base import (
    ALLOW,
    Rule,
    Subject,
    deny,
    obj,
    objects,
    string_map,
    text,
    top,
)

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


def check_subnets(subject: Subject) -> Decision:
    ipam = obj(top(subject), "IPAM", "")
    if ipam is None:
        return ALLOW
    for index, config in enumerate(objects(ipam, "Config", "IPAM.")):
        for key in ("Subnet", "IPRange", "Gateway"):
            value = text(config, key, f"IPAM.Config[{index}].")
            if not value:
                continue
            try:
                network = ip_network(value, strict=False)
            except ValueError:
                return deny("networks.subnet", f"the {key} {value[:60]!r}", "Give a CIDR")
            for routed in subject.settings.host_networks:
                if network.version == routed.version and network.overlaps(routed):
                    return deny(
                        "networks.subnet",
                        f"the {key} {network}, which overlaps {routed} that this host routes",
                        "Choose a subnet this host does not use",
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
    Rule(
        "networks.subnet",
        "networks",
        frozenset({"networks.create"}),
        "A bridge on a subnet the host routes takes the host's own traffic to it: cloud "
        "metadata, the name server, the uplink's neighbours.",
        check_subnets,
    ),
)
