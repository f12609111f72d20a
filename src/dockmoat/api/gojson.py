"""JSON bodies read the way Go's encoding/json feeds them into dockerd's structs.

Go differs from a plain JSON reader in ways an attacker can use to make a guard
and the daemon see different requests:

- struct fields match keys case-insensitively, with Unicode simple case folding
  (the long s U+017F folds to "s", the Kelvin sign U+212A to "k");
- of duplicate keys the last wins, and a repeated key holding an object is
  decoded into the same struct, so the two copies merge;
- data after the first JSON value is ignored;
- invalid UTF-8 and lone surrogates are silently replaced by U+FFFD.

We cannot reproduce merging and folding for every struct of every API version,
so we refuse what makes them matter: any object (at any depth) with two keys that
fold to the same name, anything that is not exactly one JSON value, and any
string Go would have to repair. What is left reads identically in Go and here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dockmoat.api.memo import memo_short
from dockmoat.errors import ProtocolError

#: Deeper nesting than any Docker API body needs; bounds recursion.
MAX_DEPTH = 200


@memo_short(4096)
def fold(name: str) -> str:
    """A key under Go's case-insensitive field matching (Unicode simple folding).

    Two names match in Go exactly when their folds are equal. Go folds each rune
    to the smallest rune of its `unicode.SimpleFold` orbit; Unicode's simple case
    folding (CaseFolding.txt, statuses C and S) maps every rune of an orbit to one
    representative, so equal representatives mean the same orbit. Python's
    `casefold` is the full folding; where it expands a rune to several, the simple
    folding is the rune's simple lowercase (e.g. U+1E9E to U+00DF) or the rune
    itself (U+00DF, U+0130), which is what the fallback below computes.
    """
    out = []
    for char in name:
        folded = char.casefold()
        if len(folded) != 1:
            lower = char.lower()
            folded = lower if len(lower) == 1 else char
        out.append(folded)
    return "".join(out)


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, str] = {}
    result: dict[str, Any] = {}
    for key, value in pairs:
        folded = fold(key)
        earlier = seen.get(folded)
        if earlier is not None:
            if earlier == key:
                raise ProtocolError(f"JSON body repeats the key {key!r}; send each key once")
            raise ProtocolError(
                f"JSON body has keys {earlier!r} and {key!r}, which the daemon reads as "
                "the same field; send each field once"
            )
        seen[folded] = key
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"JSON body contains {name}, which is not JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        # Go refuses a number out of float64 range; Python would make it infinite.
        raise ProtocolError(f"JSON body has the number {literal[:40]}, out of range")
    return value


def _check_strings(value: Any, depth: int = 0) -> None:
    """Refuse lone surrogates (from `\\ud800` escapes), which Go would replace."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"JSON body nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, depth + 1)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(
            "JSON body contains an unpaired UTF-16 surrogate escape; send valid Unicode"
        ) from None


def loads(raw: bytes) -> Any:
    """Decode one JSON body, or raise ProtocolError saying why it is refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolError(
            f"JSON body is not valid UTF-8 (byte {error.start}); send UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        raise ProtocolError("JSON body starts with a byte order mark; send plain UTF-8")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except ProtocolError:
        raise
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            raise ProtocolError(
                f"JSON body has data after the first value (at offset {error.pos}); "
                "send exactly one JSON value"
            ) from None
        raise ProtocolError(f"JSON body is malformed: {error.msg} at offset {error.pos}") from None
    except RecursionError:
        raise ProtocolError(f"JSON body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:
        # e.g. an integer literal past Python's digit limit; Go refuses it too.
        raise ProtocolError(f"JSON body has an unreadable value: {error}") from None
    _check_strings(value)
    return value


def field(obj: Any, name: str) -> Any:
    """The value Go's decoder would put in struct field `name`, or None if absent.

    Exact spelling first, then the folded match (after `loads` there is at most
    one key per fold). Not for maps (Labels, Sysctls...): Go matches map keys exactly.
    """
    key = field_key(obj, name)
    return None if key is None else obj[key]


def field_key(obj: Any, name: str) -> str | None:
    """The key spelling in `obj` that Go would match to struct field `name`."""
    if not isinstance(obj, Mapping):
        return None
    if name in obj:
        return name
    folded = fold(name)
    size = len(name)
    for key in obj:
        # fold() maps each character to one character, so only same-length keys can match.
        if isinstance(key, str) and len(key) == size and fold(key) == folded:
            return key
    return None


_BODY = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """Serialise a (possibly rewritten) body for forwarding."""
    return _BODY.encode(value).encode("utf-8")


def compact(value: Any) -> str:
    """`json.dumps(value, separators=(",", ":"))` (ASCII), from one encoder made once:
    `json.dumps` with arguments builds a new encoder per call, which showed in
    per-request paths (a tenant's list filter, a rewritten JSON answer)."""
    return _COMPACT.encode(value)
