"""Rules on images and builds: everything that makes the daemon fetch from somewhere."""

from __future__ import annotations

import json

from dockmoat.policy import addresses
from dockmoat.policy.decision import Decision
from dockmoat.policy.rules import build
from dockmoat.policy.rules.base import ALLOW, BodyShape, Rule, Subject, deny

PULL = frozenset({"images.create"})
PUSH = frozenset({"images.push"})
BUILD = frozenset({"build.build"})
DISTRIBUTION = frozenset({"distribution.*"})
#: `GET /images/search?term=HOST/x` makes dockerd connect to HOST (verified on 20.10).
SEARCH = frozenset({"images.search"})
#: BuildKit's marker for "the context comes over the session", not a fetch.
CLIENT_SESSION = "client-session"


def search_index(term: str) -> str | None:
    """The index a search term names, as dockerd's splitReposSearchTerm; None for Hub."""
    first, sep, _rest = term.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def registry_problem(reference: str, subject: Subject) -> str | None:
    if subject.route in SEARCH:
        registry = search_index(reference)
    else:
        registry = addresses.registry_of(reference)
    if registry is None or registry.lower() in subject.settings.registries:
        return None
    if addresses.is_internal(addresses.split_host_port(registry)):
        return (
            f"the registry {registry} of {reference!r} is a loopback, link-local or private address"
        )
    return None


def _references(subject: Subject) -> list[tuple[str, str]]:
    request = subject.request
    route = subject.route
    if route in PULL:
        image = request.param("fromImage")
        return [(image, "fromImage")] if image else []
    if route in SEARCH:
        term = request.param("term")
        return [(term, "term")] if term else []
    if route in BUILD:
        raw = request.param("cachefrom")
        if not raw:
            return []
        try:
            values = json.loads(raw)
        except ValueError:
            raise BodyShape("the cachefrom parameter", "a JSON list of image names") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BodyShape("the cachefrom parameter", "a JSON list of image names")
        # dockerd's BuildKit joins the entries with commas and splits them again:
        # `a,localhost:5000/x` is two references, each checked.
        parts = [part.strip() for value in values for part in value.split(",")]
        for part in parts:
            if "=" in part:
                raise BodyShape("the cachefrom parameter", "image names, not cache specs")
        return [(part, "cachefrom") for part in parts if part]
    name = request.route.params.get("name")
    return [(name, "the image name")] if name else []


def check_registry_address(subject: Subject) -> Decision:
    for reference, where in _references(subject):
        problem = registry_problem(reference, subject)
        if problem is not None:
            return deny(
                "images.registry-address",
                f"{problem} ({where})",
                "Use a public registry, or ask for the registry to be allowlisted (registries:)",
            )
    return ALLOW


def check_remote_fetch(subject: Subject) -> Decision:
    source = subject.request.param("fromSrc")
    if not source or source == "-" or subject.request.param("fromImage"):
        return ALLOW
    if addresses.url_allowed(source, subject.settings.fetch_targets):
        return ALLOW
    return deny(
        "images.remote-fetch",
        f"an image import the daemon downloads from {source[:200]!r} (fromSrc)",
        "Upload the archive yourself (docker import FILE), or ask for the URL to be "
        "allowlisted (fetch_targets:)",
    )


def check_network_host(subject: Subject) -> Decision:
    if subject.route in build.ALL:
        return build.check_network_host(subject)
    mode = subject.request.param("networkmode") or ""
    if mode == "host" or mode.startswith(("host:", "container:")):
        return deny(
            "build.network-host",
            f"a build with networkmode={mode}",
            "Build on the default network (leave --network unset) or a user-defined one",
        )
    return ALLOW


def check_remote_context(subject: Subject) -> Decision:
    remote = subject.request.param("remote") or ""
    if not remote or remote == CLIENT_SESSION:
        return ALLOW
    if addresses.url_allowed(remote, subject.settings.fetch_targets):
        return ALLOW
    return deny(
        "build.remote-context",
        f"a build context the daemon fetches from {remote[:200]!r}",
        "Send the context from the client (docker build DIR), or ask for the URL to be "
        "allowlisted (fetch_targets:)",
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "images.remote-fetch",
        "images",
        PULL,
        "Imports from URLs make the daemon fetch arbitrary addresses from inside the host.",
        check_remote_fetch,
        reads_body=False,
    ),
    Rule(
        "images.registry-address",
        "images",
        PULL | PUSH | BUILD | DISTRIBUTION | SEARCH,
        "Registries at loopback, link-local or private addresses turn the daemon into a "
        "request forger inside the host's network.",
        check_registry_address,
        reads_body=False,
    ),
    Rule(
        "build.network-host",
        "build",
        BUILD | build.ALL,
        "RUN steps on the host network reach every service bound on the host.",
        check_network_host,
        reads_body=False,
    ),
    Rule(
        "build.remote-context",
        "build",
        BUILD,
        "Remote build contexts make the daemon fetch arbitrary URLs and git repositories.",
        check_remote_context,
        reads_body=False,
    ),
)
