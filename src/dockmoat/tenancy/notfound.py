"""dockerd's own "does not exist" answers, so that another tenant's resource is
indistinguishable from one that never existed (wording checked against 20.10)."""

from __future__ import annotations

from dockmoat.policy.decision import Deny
from dockmoat.tenancy.model import normalize_tag

RULE = "tenancy.not-found"


def no_such_container(ref: str) -> Deny:
    return Deny(RULE, f"No such container: {ref}", status=404)


def no_such_image(ref: str, *, inspect: bool = False) -> Deny:
    tag = normalize_tag(ref) if not ref.startswith("sha256:") else ref
    if inspect:
        return Deny(RULE, f"no such image: {ref}: No such image: {tag}", status=404)
    return Deny(RULE, f"No such image: {tag}", status=404)


def no_such_volume(ref: str) -> Deny:
    return Deny(RULE, f"get {ref}: no such volume", status=404)


def no_such_network(ref: str) -> Deny:
    return Deny(RULE, f"network {ref} not found", status=404)


def no_such_exec(ref: str) -> Deny:
    return Deny(RULE, f"No such exec instance: {ref}", status=404)
