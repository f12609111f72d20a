"""Query strings and form bodies as dockerd 20.10 (Go 1.19 `net/url`) reads them.

Go's `url.ParseQuery` splits on "&" only; since Go 1.17 a pair holding a ";"
is dropped with an error, and a pair with a bad `%` escape is dropped with an
error. dockerd's `httputils.ParseForm` turns such an error into a 400 for most
handlers, but a handler that does not call it would still run with the pairs
that did parse. To never evaluate something other than what runs, both cases
are refused here outright (ProtocolError, 400).

Keys are case-sensitive, every value of a repeated key is kept in order (the
first one wins for `FormValue`), `+` is a space. Go strings are bytes: text that
is not UTF-8 is kept losslessly as surrogate escapes.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from dockmoat.api.memo import memo_short
from dockmoat.errors import ProtocolError

# A "%" not followed by two hex digits (Go: "invalid URL escape").
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_FALSE = frozenset({"", "0", "no", "false", "none"})
# Go's unicode.IsSpace set (Python's str.strip() also drops \x1c-\x1f; Go does not).
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


def go_unescape(raw: str, *, plus_is_space: bool, where: str) -> str:
    """Go's `url.unescape`: `%XX` always; `+` is a space in queries, a plus in paths.

    Invalid escapes raise ProtocolError (Go reports an error for them).
    """
    if "%" not in raw:
        return raw.replace("+", " ") if plus_is_space else raw
    data = raw.encode("utf-8", "surrogateescape")
    if _BAD_ESCAPE.search(data) is not None:
        raise ProtocolError(f"invalid URL escape in {where} {raw[:80]!r}")
    if plus_is_space:
        data = data.replace(b"+", b" ")  # before unquoting: "%2B" stays a plus
    return unquote_to_bytes(data).decode("utf-8", "surrogateescape")


def _unescape(raw: str) -> str:
    """Go's `url.QueryUnescape`."""
    return go_unescape(raw, plus_is_space=True, where="query")


def parse_query(raw: str) -> dict[str, list[str]]:
    """Go's `url.ParseQuery`, refusing (ProtocolError) what Go would report an error for."""
    values: dict[str, list[str]] = {}
    # Most queries hold nothing to unescape or refuse: their pairs are only split.
    plain = "%" not in raw and "+" not in raw and ";" not in raw
    for pair in raw.split("&"):
        if not plain and ";" in pair:
            raise ProtocolError("invalid semicolon separator in query")
        if pair == "":
            continue
        key, _sep, value = pair.partition("=")
        if not plain:
            key, value = _unescape(key), _unescape(value)
        values.setdefault(key, []).append(value)
    return values


def merge_form(body: dict[str, list[str]], query: dict[str, list[str]]) -> dict[str, list[str]]:
    """Go's `Request.ParseForm` result: body values first, then the URL's."""
    merged: dict[str, list[str]] = {key: list(vals) for key, vals in body.items()}
    for key, vals in query.items():
        merged.setdefault(key, []).extend(vals)
    return merged


def media_type(content_type: str | None) -> str:
    """The lower-cased media type of a Content-Type value (Go's ParseMediaType, leniently)."""
    if content_type is None or content_type.strip() == "":
        return "application/octet-stream"
    return content_type.split(";", 1)[0].strip().lower()


def go_bool(value: str | None) -> bool:
    """dockerd's `httputils.BoolValue`: true unless "", 0, no, false or none (any case)."""
    if value is None:
        return False
    return value.strip(_GO_SPACE).lower() not in _FALSE


def encode_query(values: dict[str, list[str]]) -> str:
    """Serialise parameters so that `parse_query` gives them back unchanged."""
    parts: list[str] = []
    for key, vals in values.items():
        for value in vals:
            parts.append(f"{_escape(key)}={_escape(value)}")
    return "&".join(parts)


@memo_short(4096)
def _escape(text: str) -> str:
    """Every byte but A-Z a-z 0-9 - _ . ~ as %XX (memoised: tenancy's filters repeat)."""
    return quote(text, safe="", encoding="utf-8", errors="surrogateescape")
