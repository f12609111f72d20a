"""Policy rules, one module per Engine API resource, in ONE explicit order.

Endpoint rules come first (cheap, no body), then containers, exec, images and
builds, BuildKit calls (`build`), volumes, networks.
Within a module the order is the order of `RULES`.
"""

from __future__ import annotations

from dockmoat.policy.rules import build, containers, exec, images, networks, system, volumes
from dockmoat.policy.rules.base import Rule

ALL_RULES: tuple[Rule, ...] = (
    *system.RULES[:5],
    *containers.RULES,
    *exec.RULES,
    *images.RULES,
    *build.RULES,
    *volumes.RULES,
    *networks.RULES,
    *system.RULES[5:],
)
