"""Endpoint-level rules (which parts of the API are open) and `/auth`."""

from __future__ import annotations

from dockmoat.policy import addresses
from dockmoat.policy.decision import Decision
from dockmoat.policy.rules.base import ALLOW, Rule, Subject, deny, text, top

ENDPOINT = frozenset({"endpoint"})
SWARM = ("swarm", "nodes", "services", "tasks", "secrets", "configs")


def _closed(rule_id: str, what: str) -> Decision:
    return deny(rule_id, what, "A policy file may switch this rule off knowingly")


def check_plugins(subject: Subject) -> Decision:
    return _closed(
        "system.plugins",
        f"{subject.request.method} {subject.request.path}: plugins run as root on the host",
    )


def check_swarm(subject: Subject) -> Decision:
    return _closed(
        "system.swarm",
        f"{subject.request.method} {subject.request.path}: swarm endpoints "
        "(swarm, nodes, services, tasks, secrets, configs)",
    )


def check_session(subject: Subject) -> Decision:
    return _closed(
        "system.session",
        f"{subject.request.method} {subject.request.path}: BuildKit tunnels (/session, /grpc), "
        "whose contents cannot be inspected",
    )


def check_unknown(subject: Subject) -> Decision:
    return deny(
        "system.unknown-endpoint",
        f"{subject.request.method} {subject.request.path}: an endpoint the Engine API "
        "does not define",
        "Use a documented Engine API endpoint",
    )


def check_auth_address(subject: Subject) -> Decision:
    address = text(top(subject), "ServerAddress", "") or ""
    if not address:
        return ALLOW
    host = addresses.url_host(address)
    registry = address.split("://", 1)[-1].split("/", 1)[0].lower()
    if registry in subject.settings.registries:
        return ALLOW
    if host is None or addresses.is_internal(host):
        return deny(
            "system.auth-address",
            f"a login the daemon sends to {address[:200]!r}, a loopback, link-local or "
            "private address",
            "Log in to a public registry, or ask for the registry to be allowlisted (registries:)",
        )
    return ALLOW


RULES: tuple[Rule, ...] = (
    Rule(
        "system.unknown-endpoint",
        "system",
        frozenset({"unknown.*"}),
        "Endpoints the Engine API does not define are not forwarded.",
        check_unknown,
        reads_body=False,
    ),
    Rule(
        "system.plugins",
        "system",
        frozenset({"plugins.*"}),
        "Plugins are installed and run as root on the host.",
        check_plugins,
        reads_body=False,
        tags=ENDPOINT,
    ),
    Rule(
        "system.swarm",
        "system",
        frozenset(f"{resource}.*" for resource in SWARM),
        "Swarm turns the host into a cluster node and services bypass container rules.",
        check_swarm,
        reads_body=False,
        tags=ENDPOINT,
    ),
    Rule(
        "system.session",
        "system",
        frozenset({"session.*", "grpc.*"}),
        "BuildKit's tunnels carry opaque gRPC streams the policy cannot read.",
        check_session,
        reads_body=False,
        tags=ENDPOINT,
    ),
    Rule(
        "system.auth-address",
        "system",
        frozenset({"system.auth"}),
        "A login makes the daemon connect to the given server, also inside the host's network.",
        check_auth_address,
    ),
)
