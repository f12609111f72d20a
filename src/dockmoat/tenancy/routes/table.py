"""The tenancy route table: one entry per Engine API route, assembled from routes/.

Every route name of `api/endpoints.py` is here exactly once: with its own
`Entry`, or with `DEFAULT` where its module lists it as UNTOUCHED (a unit test
checks both). A route name the table lacks (`unknown.*`, a route a newer
endpoint table adds) gets `DEFAULT` too: the reference table check still
refuses whatever it names that tenancy does not resolve (refs.py), so it fails
closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dockmoat.tenancy.routes import build, containers, exec, images, networks, system, volumes
from dockmoat.tenancy.routes.base import DEFAULT, Entry

MODULES = (containers, exec, images, build, volumes, networks, system)


def _assemble() -> dict[str, Entry]:
    table: dict[str, Entry] = {}
    for module in MODULES:
        for entry in module.ENTRIES:
            if entry.route in table:
                raise ValueError(f"tenancy route {entry.route} has two entries")
            table[entry.route] = entry
        for route in module.UNTOUCHED:
            if route in table:
                raise ValueError(f"tenancy route {route} has an entry and is untouched")
            table[route] = DEFAULT
    return table


TABLE: Mapping[str, Entry] = MappingProxyType(_assemble())


def entry(route: str) -> Entry:
    """What tenancy does for a route (`DEFAULT` for one it does not know)."""
    return TABLE.get(route, DEFAULT)
