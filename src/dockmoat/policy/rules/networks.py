"""Rules on networks."""

from __future__ import annotations

from dockmoat.policy.decision import Decision
from dockmoat.policy.rules.base import ALLOW, Rule, Subject, deny, text, top

DRIVERS = frozenset({"", "bridge", "overlay"})


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


RULES: tuple[Rule, ...] = (
    Rule(
        "networks.driver",
        "networks",
        frozenset({"networks.create"}),
        "macvlan, ipvlan and plugin networks attach containers to the host's interfaces.",
        check_driver,
    ),
)
