"""Endpoint switches with the meanings of Tecnativa's docker-socket-proxy variables.

So that dockmoat can replace that proxy in an existing compose file unchanged:
when any of these variables is set, they decide which endpoints are open, with
that project's defaults (only EVENTS, PING and VERSION open; POST=0 makes the
whole API read-only; ALLOW_START / ALLOW_STOP / ALLOW_RESTARTS open those
container actions without CONTAINERS, but like every write they need POST=1).
Two deliberate differences close leaks the original leaves open: EXEC=0 also
closes `POST /containers/{id}/exec`, and read-only mode also closes archive
downloads, export and attach, which read data out of containers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dockmoat.api.request import ApiRequest
from dockmoat.errors import ConfigError
from dockmoat.policy.decision import Allow, Decision
from dockmoat.policy.rules.base import deny

log = logging.getLogger(__name__)

#: Section variables: first path segment -> variable.
SECTIONS = {
    "auth": "AUTH",
    "build": "BUILD",
    "commit": "COMMIT",
    "configs": "CONFIGS",
    "containers": "CONTAINERS",
    "distribution": "DISTRIBUTION",
    "events": "EVENTS",
    "exec": "EXEC",
    "grpc": "GRPC",
    "images": "IMAGES",
    "info": "INFO",
    "networks": "NETWORKS",
    "nodes": "NODES",
    "_ping": "PING",
    "plugins": "PLUGINS",
    "secrets": "SECRETS",
    "services": "SERVICES",
    "session": "SESSION",
    "swarm": "SWARM",
    "system": "SYSTEM",
    "tasks": "TASKS",
    "version": "VERSION",
    "volumes": "VOLUMES",
}
ACTIONS = ("POST", "ALLOW_START", "ALLOW_STOP", "ALLOW_RESTARTS")
VARIABLES = (*SECTIONS.values(), *ACTIONS)
DEFAULT_OPEN = frozenset({"EVENTS", "PING", "VERSION"})
RULE_ID = "endpoints.switches"

#: Container reads that leak contents: closed in read-only mode, unlike the original.
_LEAKY_READS = frozenset({"archive_get", "archive_info", "export", "attach", "attach_ws", "copy"})
_VERSION = re.compile(r"^/v[0-9.]+(?=/)")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_flag(name: str, raw: str | int | bool) -> bool:
    """A switch value; anything unclear fails loudly at start-up."""
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value.lstrip("-").isdigit():
        return int(value) != 0
    raise ConfigError(f"endpoint switch {name}={raw!r}: use 1 (open) or 0 (closed)")


@dataclass(frozen=True, slots=True)
class Switches:
    """The open/closed state of every variable, defaults filled in."""

    values: Mapping[str, bool]

    @classmethod
    def build(cls, given: Mapping[str, bool]) -> Switches:
        values = {name: name in DEFAULT_OPEN for name in VARIABLES}
        values.update(given)
        return cls(values)

    def on(self, name: str) -> bool:
        return self.values.get(name, False)

    def decide(self, request: ApiRequest) -> Decision:
        segments = _VERSION.sub("", request.path).lstrip("/").split("/")
        method = request.method.upper()
        read = method in ("GET", "HEAD")
        first = segments[0] if segments else ""
        route = request.route
        action = route.action if route.resource == "containers" else ""
        if not read and not self.on("POST"):
            return _closed(f"{method} {request.path}: the API is read-only here (POST=0)")
        if read and not self.on("POST") and action in _LEAKY_READS:
            return _closed(
                f"{method} {request.path}: reading container contents in read-only mode (POST=0)"
            )
        if action in ("stop", "restart", "kill") and self.on("ALLOW_RESTARTS"):
            return Allow(RULE_ID)
        if action == "start" and self.on("ALLOW_START"):
            return Allow(RULE_ID)
        if action == "stop" and self.on("ALLOW_STOP"):
            return Allow(RULE_ID)
        if action == "exec" and not self.on("EXEC"):
            return _closed(f"{method} {request.path}: exec is switched off (EXEC=0)")
        variable = SECTIONS.get(first)
        if variable is None or not self.on(variable):
            shown = variable or first or "/"
            return _closed(f"{method} {request.path}: the {shown} endpoints are switched off")
        return Allow(RULE_ID)


def _closed(refused: str) -> Decision:
    return deny(RULE_ID, refused, "Ask for the endpoint switch to be set to 1")


def from_env(env: Mapping[str, str]) -> dict[str, bool]:
    """The switches set in an environment (only the known variable names).

    Names such as VERSION or SYSTEM are common in CI environments with unrelated
    values (VERSION=1.2.3); a value that is not a switch value is ignored with a
    warning instead of turning switch mode on or stopping start-up. Ignoring it
    fails closed: a section whose variable is not understood stays shut.
    """
    switches: dict[str, bool] = {}
    for name in VARIABLES:
        if name not in env:
            continue
        try:
            switches[name] = parse_flag(name, env[name])
        except ConfigError:
            log.warning(
                "ignoring %s=%r: not an endpoint switch value (use 1 or 0)", name, env[name]
            )
    return switches
