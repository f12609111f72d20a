"""Reading and changing decoded request bodies the way dockerd's Go decoder matches keys.

Go's `encoding/json` matches struct field names case-insensitively (simple
Unicode folding); the policy refuses bodies whose keys collide under that
folding, so here the one matching key is enough. Map contents (labels) are
case-sensitive and are not looked up through these helpers.
"""

from __future__ import annotations

from typing import Any


def _fold(key: str) -> str:
    # casefold() maps the long s and the Kelvin sign like Go; "ß" -> "ss" does not
    # matter for Docker's ASCII field names.
    return key.casefold()


def find_key(obj: dict[str, Any], field: str) -> str | None:
    """The key of `obj` dockerd would decode into `field`, if any (the last one wins)."""
    wanted = _fold(field)
    found: str | None = None
    for key in obj:
        if _fold(key) == wanted:
            found = key
    return found


def get_field(obj: Any, field: str) -> Any:
    if not isinstance(obj, dict):
        return None
    key = find_key(obj, field)
    return obj[key] if key is not None else None


def set_field(obj: dict[str, Any], field: str, value: Any) -> None:
    """Set `field`, replacing whichever spelling the client used."""
    key = find_key(obj, field)
    obj[key if key is not None else field] = value
