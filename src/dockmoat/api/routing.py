"""Route a request exactly as dockerd (Go net/http + gorilla/mux) would.

The rules, each of which an attacker could otherwise use to make the gateway
check one endpoint while dockerd runs another:

- the target is read like Go's `url.ParseRequestURI`: origin form, absolute
  form (`http://host/path`: only the path counts), `*`; control bytes and bad
  percent escapes are refused (Go answers 400);
- the path is percent-decoded ONCE and routes match the decoded path;
- `//` and dot segments are NOT cleaned: gorilla/mux answers such paths with a
  301 redirect and runs nothing, so they classify as unknown (the gateway never
  follows a redirect itself);
- an optional `/v<digits and dots>` prefix is stripped (`/v1.41.`, `/v01.041`
  and `/v.` are all accepted by the router; the version check comes later);
- the first table entry matching both method (case-sensitive) and path wins.

Pure functions, no I/O.
"""

from __future__ import annotations

import posixpath
import re
from functools import lru_cache
from types import MappingProxyType
from typing import Final, NamedTuple

from dockmoat.api.endpoints import ENDPOINTS
from dockmoat.api.memo import LONGEST, memo_short
from dockmoat.api.query import go_unescape
from dockmoat.api.request import Route
from dockmoat.errors import ProtocolError

UNKNOWN: Final = ("unknown", "unknown")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_VERSION = re.compile(r"/v(?P<version>[0-9.]+)(?P<rest>/.*)", re.DOTALL)
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_TEMPLATE_VAR = re.compile(r"\{([a-z]+)(?::([^}]*))?\}")


def _compile(template: str) -> re.Pattern[str]:
    """A gorilla/mux path template as a regexp (default variable pattern `[^/]+`)."""
    out: list[str] = []
    pos = 0
    for match in _TEMPLATE_VAR.finditer(template):
        out.append(re.escape(template[pos : match.start()]))
        pattern = match.group(2) if match.group(2) is not None else "[^/]+"
        out.append(f"(?P<{match.group(1)}>{pattern})")
        pos = match.end()
    out.append(re.escape(template[pos:]))
    # Go's `.` does not match "\n" either (no DOTALL), and fullmatch is Go's `^...$`.
    return re.compile("".join(out))


_TABLE: Final = tuple(
    (method, _compile(template), resource, action)
    for method, template, resource, action in ENDPOINTS
)


def _unescape_path(raw: str) -> str:
    """Go's `unescape(s, encodePath)`: `%XX` only; `+` stays a plus."""
    return go_unescape(raw, plus_is_space=False, where="path")


def _refuse_controls(text: str) -> None:
    if _CTL.search(text) is not None:
        raise ProtocolError("invalid control character in request target")


@memo_short(4096)
def split_target(target: str) -> tuple[str, str | None]:
    """(decoded path, raw query or None) of a request target, as Go reads it.

    Raises ProtocolError where Go's server answers 400. Pure, so memoised: a CI
    job sends the same few targets over and over (the gateway's hot path).
    """
    _refuse_controls(target)
    if target == "*":
        return "*", None
    rest = target
    if not rest.startswith("/"):
        scheme = _SCHEME.match(rest)
        if scheme is None:
            raise ProtocolError(f"invalid URI for request: {target[:80]!r}")
        rest = rest[scheme.end() :]
        if not rest.startswith("/"):
            # Opaque form ("a:b"): Go keeps no path, the router redirects.
            return "", None
        if rest.startswith("//"):
            authority_end = len(rest)
            for sep in "/?":
                idx = rest.find(sep, 2)
                if idx != -1:
                    authority_end = min(authority_end, idx)
            rest = rest[authority_end:]
    path, sep, query = rest.partition("?")
    return _unescape_path(path), (query if sep else None)


def _clean(path: str) -> str:
    """gorilla/mux's cleanPath: the path it would redirect to."""
    if path == "":
        return "/"
    if path[0] != "/":
        path = "/" + path
    cleaned = posixpath.normpath(path)
    # posixpath keeps a leading "//" (POSIX); Go's path.Clean does not.
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


@memo_short(4096)
def route_path(method: str, path: str) -> tuple[str, str | None, Route]:
    """Route a decoded path: (path without version prefix, version or None, Route)."""
    if _clean(path) != path:
        return path, None, Route(*UNKNOWN)
    version: str | None = None
    routed = path
    versioned = _VERSION.fullmatch(path)
    if versioned is not None:
        version = versioned.group("version")
        routed = versioned.group("rest")
    for entry_method, pattern, resource, action in _TABLE:
        if entry_method != method:
            continue
        match = pattern.fullmatch(routed)
        if match is not None:
            return routed, version, Route(resource, action, MappingProxyType(match.groupdict()))
    return routed, version, Route(*UNKNOWN)


class Routed(NamedTuple):
    """A routed target: the routed path, the API version, the Route, the raw query."""

    path: str
    version: str | None
    route: Route
    raw_query: str | None


def route_target(method: str, target: str) -> Routed:
    """A request target routed as dockerd routes it, with its raw query.

    The routed path is the percent-decoded path without the `/v<version>`
    prefix. Raises ProtocolError for targets Go's server refuses with 400.
    Pure. An origin-form target (all that clients send) is routed once per
    distinct method and path: targets that differ only in their query (a
    poller's `since=`, `filters=`) cost a split and a scan of the query.
    The Route is immutable (read-only params).
    """
    if target[:1] == "/":
        # Go's ParseRequestURI: the path ends at the first "?"; no fragment.
        raw_path, sep, raw_query = target.partition("?")
        if sep:
            _refuse_controls(raw_query)
        # Memoised for short paths only (see api/memo.py), checked inline: per request.
        routed = (
            _route_origin_memo(method, raw_path)
            if len(raw_path) <= LONGEST
            else _route_origin_path(method, raw_path)
        )
        return Routed(*routed, raw_query if sep else None)
    path, query = split_target(target)
    return Routed(*route_path(method, path), query)


def _route_origin_path(method: str, raw_path: str) -> tuple[str, str | None, Route]:
    _refuse_controls(raw_path)
    return route_path(method, _unescape_path(raw_path))


_route_origin_memo = lru_cache(maxsize=4096)(_route_origin_path)


def classify(method: str, target: str) -> tuple[str, str | None, Route]:
    """(routed path, API version or None, Route): `route_target` without the query."""
    path, version, route, _query = route_target(method, target)
    return path, version, route


def raw_query(target: str) -> str | None:
    """The raw query of a target `route_target` accepted (None: no "?")."""
    if target[:1] == "/":
        _path, sep, query = target.partition("?")
        return query if sep else None
    return split_target(target)[1]
