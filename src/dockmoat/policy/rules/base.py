"""What every rule is made of: the rule record, its input, and typed body access.

A rule is a small pure function from a `Subject` (the request, the body as it
stands after earlier rewrites, the compiled settings) to a Decision. Bodies are
read with the accessors below, which treat JSON null as absent (as Go does) and
raise `BodyShape` for a value dockerd could not decode into its struct; the
engine turns that into a Deny, so a malformed body never slips past a rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any, NamedTuple

from dockmoat.api.gojson import field as go_field
from dockmoat.api.gojson import field_key
from dockmoat.api.request import ApiRequest
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite

BASELINE = frozenset({"baseline", "restricted"})
RESTRICTED = frozenset({"restricted"})


@dataclass(frozen=True, slots=True)
class Limit:
    """A default injected when a request sets none, and a maximum."""

    default: int | None = None
    maximum: int | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything rules need from the compiled policy; immutable, built once."""

    allow_bind: tuple[str, ...] = ()
    """Allowed bind source folders, already resolved with realpath."""
    protected_paths: tuple[str, ...] = ()
    # A job's own guarded socket: bindable although it lies among the protected paths
    # (tenancy puts it where a job container binds the Docker socket).
    own_socket: str | None = None
    """Host paths no bind may expose, itself or through a parent (daemon sockets)."""
    runtimes: frozenset[str] = frozenset({"runc"})
    """Runtimes allowed besides the daemon's default (an empty Runtime)."""
    registries: frozenset[str] = frozenset()
    fetch_targets: tuple[str, ...] = ()
    memory: Limit = Limit()
    nano_cpus: Limit = Limit()
    pids: Limit = Limit(default=4096)
    host_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    """What this host routes (netinfo.routed_networks), read once at start-up."""


class Subject(NamedTuple):
    """One rule's input: the request, the body so far, and the settings.
    (One per evaluated request: a NamedTuple, built faster than a frozen dataclass.)"""

    request: ApiRequest
    body: Any
    settings: Settings

    @property
    def route(self) -> str:
        return self.request.route.name


Check = Callable[[Subject], Decision]


@dataclass(frozen=True, slots=True)
class Rule:
    """A policy rule: stable id, the routes it looks at, why it exists."""

    id: str
    resource: str
    routes: frozenset[str]
    rationale: str
    check: Check
    profiles: frozenset[str] = BASELINE
    reads_body: bool = True
    query_only: frozenset[str] = frozenset()
    """Routes on which this rule reads only the query, not the body."""
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def body_routes(self) -> frozenset[str]:
        return self.routes - self.query_only if self.reads_body else frozenset()


class BodyShape(Exception):
    """A body field holds a value dockerd's struct cannot take."""

    def __init__(self, where: str, expected: str) -> None:
        super().__init__(f"{where} must be {expected}")
        self.where = where
        self.expected = expected


def deny(rule_id: str, refused: str, instead: str) -> Deny:
    """The one message form: `dockmoat: <rule>: <refused>. <allowed instead>`."""
    return Deny(rule_id, f"dockmoat: {rule_id}: {refused}. {instead}")


ALLOW = Allow()


def rewrite(rule_id: str, body: Any, *notes: str) -> Rewrite:
    return Rewrite(rule=rule_id, notes=tuple(notes), body_json=body)


# --- typed access, Go style -------------------------------------------------------


def obj(value: Any, name: str, where: str) -> Mapping[str, Any] | None:
    got = go_field(value, name)
    if got is None:
        return None
    if not isinstance(got, dict):
        raise BodyShape(f"{where}{name}", "an object")
    return got


def text(value: Any, name: str, where: str) -> str | None:
    got = go_field(value, name)
    if got is None:
        return None
    if not isinstance(got, str):
        raise BodyShape(f"{where}{name}", "a string")
    return got


def flag(value: Any, name: str, where: str) -> bool:
    got = go_field(value, name)
    if got is None:
        return False
    if not isinstance(got, bool):
        raise BodyShape(f"{where}{name}", "true or false")
    return got


def integer(value: Any, name: str, where: str) -> int | None:
    got = go_field(value, name)
    if got is None:
        return None
    if isinstance(got, bool) or not isinstance(got, int):
        raise BodyShape(f"{where}{name}", "an integer")
    return got


def texts(value: Any, name: str, where: str) -> list[str]:
    got = go_field(value, name)
    if got is None:
        return []
    if not isinstance(got, list) or not all(isinstance(item, str) for item in got):
        raise BodyShape(f"{where}{name}", "a list of strings")
    return got


def str_slice(value: Any, name: str, where: str) -> list[str]:
    """A Go `strslice.StrSlice` field (CapAdd, CapDrop): a list of strings or one string."""
    got = go_field(value, name)
    if isinstance(got, str):
        return [got]
    return texts(value, name, where)


def objects(value: Any, name: str, where: str) -> list[Mapping[str, Any]]:
    got = go_field(value, name)
    if got is None:
        return []
    if not isinstance(got, list) or not all(isinstance(item, dict) for item in got):
        raise BodyShape(f"{where}{name}", "a list of objects")
    return got


def string_map(value: Any, name: str, where: str) -> Mapping[str, str]:
    got = go_field(value, name)
    if got is None:
        return {}
    if not isinstance(got, dict) or not all(isinstance(item, str) for item in got.values()):
        raise BodyShape(f"{where}{name}", "an object of strings")
    return got


def present(value: Any, name: str) -> bool:
    """Whether a field is set to something other than null."""
    return go_field(value, name) is not None


def top(subject: Subject) -> Mapping[str, Any]:
    body = subject.body
    if not isinstance(body, dict):
        raise BodyShape("the body", "a JSON object")
    return body


def host_configs(subject: Subject) -> Iterator[tuple[Mapping[str, Any], str]]:
    """Every place a container create body can carry HostConfig fields.

    dockerd's create wrapper embeds a second `*container.HostConfig` at the top
    level (runconfig.ContainerConfigWrapper), so `{"Privileged": true}` without
    any "HostConfig" key creates a privileged container; when both are present
    it merges some fields. Rules check both places, so neither can hide a field.
    """
    return body_host_configs(top(subject))


def body_host_configs(body: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], str]]:
    """`host_configs` of a create body itself (a JSON object)."""
    inner = obj(body, "HostConfig", "")
    if inner is not None:
        yield inner, "HostConfig."
    yield body, ""


def resources(subject: Subject) -> Iterator[tuple[Mapping[str, Any], str]]:
    """HostConfig-or-Resources field holders for create and update bodies."""
    if subject.route == "containers.update":
        yield top(subject), ""
    else:
        yield from host_configs(subject)


def key_of(value: Mapping[str, Any], name: str) -> str | None:
    return field_key(value, name)


def cap_name(raw: str) -> str:
    """A capability as dockerd normalises it: Go's ToUpper, then a CAP_ prefix."""
    upper = "".join(c.upper() if len(c.upper()) == 1 else c for c in raw)
    if upper == "ALL" or upper.startswith("CAP_"):
        return upper
    return "CAP_" + upper
