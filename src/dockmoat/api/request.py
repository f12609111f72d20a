"""The parsed, typed request that reaches the one decision point of the gateway.

Everything the policy and tenancy layers look at is here, already read the way
dockerd reads it (routing, Go query rules, Go JSON rules). Nothing in this
module does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Route:
    """Where dockerd would dispatch a request.

    `resource` and `action` name the endpoint ("containers", "create");
    `params` holds path variables such as {"id": "abc"} or {"name": "img:tag"}.
    An unknown endpoint has resource "unknown".
    """

    resource: str
    action: str
    # Read-only, so one Route can be shared by every request to the same target.
    params: Mapping[str, str] = field(default_factory=lambda: _NO_PARAMS)
    # "resource.action", computed once: every rule and stage looks it up.
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.resource}.{self.action}")


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who is on the other end of a client connection (for audit and tenancy)."""

    listener: str
    tenant: str | None = None
    uid: int | None = None
    pid: int | None = None
    tls_subject: str | None = None
    address: str | None = None


class ApiRequest(NamedTuple):
    """One Docker API request, as dockerd will read it.

    `query` maps each key to all its values in order (Go: first one wins for
    FormValue). `body_json` is the decoded JSON body where the endpoint takes
    one, `None` where there is none or the endpoint streams an opaque body.
    Immutable; changed copies come from `_replace`. A NamedTuple because one is
    built per request, about three times faster than a frozen dataclass.
    """

    method: str
    raw_target: str
    path: str
    api_version: str | None
    route: Route
    query: dict[str, list[str]]
    headers: tuple[tuple[str, str], ...]
    client: ClientIdentity
    body_json: Any = None
    body_raw: bytes | None = None

    def param(self, key: str) -> str | None:
        """Go's `r.Form.Get(key)`: the first value, or None when absent."""
        values = self.query.get(key)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None
