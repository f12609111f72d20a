"""Rules on BuildKit calls (`/grpc`): what a build may make the daemon do.

The gRPC layer (`dockmoat.buildkit`) decodes each call that says something and
hands it to the policy as a request on a `buildkit.*` route whose body is the
decoded message: `buildkit.control_solve` (Control.Solve), `buildkit.bridge_solve`
(LLBBridge.Solve, the frontend's own solves), `buildkit.resolve`
(ResolveImageConfig, ResolveSourceMeta) and `buildkit.container` (NewContainer and
the Init of ExecProcess, interactive build containers).

BuildKit checks a step's needs against the entitlements of the Solve that runs
it, also for steps a frontend makes inside the daemon from a Dockerfile
(`RUN --network=host`, `RUN --security=insecure`): refusing the entitlement in
Control.Solve is what stops those steps, and LLB the client sends itself is read
op by op as well.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Final

from dockmoat.buildkit.messages import (
    NET_HOST,
    SECURITY_INSECURE,
    BridgeSolve,
    CacheEntry,
    ContainerStart,
    ControlSolve,
    Definition,
    Exec,
    ImageResolve,
    Source,
)
from dockmoat.buildkit.wire import len_field, varint
from dockmoat.policy import addresses
from dockmoat.policy.decision import Decision
from dockmoat.policy.rules.base import ALLOW, BodyShape, Rule, Settings, Subject, deny, rewrite
from dockmoat.policy.rules.containers import ulimit_problem

SOLVE: Final = "buildkit.control_solve"
BRIDGE: Final = "buildkit.bridge_solve"
RESOLVE: Final = "buildkit.resolve"
CONTAINER: Final = "buildkit.container"
SOLVES: Final = frozenset({SOLVE, BRIDGE})
ALL: Final = frozenset({SOLVE, BRIDGE, RESOLVE, CONTAINER})

#: Exporters that leave the result in the daemon's image store or send it to the client.
EXPORTERS: Final = frozenset({"moby", "image", "docker", "oci", "tar", "local", "cacheonly"})
#: Frontends the daemon runs itself; `gateway.v0` runs the image its `source` names.
FRONTENDS: Final = frozenset({"", "dockerfile.v0", "gateway.v0"})
#: Cache backends whose attributes name a URL the daemon connects to.
CACHE_URL_ATTRS: Final = ("url", "endpoint_url", "account_url", "url_v2")


def _definitions(body: object) -> tuple[Definition, ...]:
    if isinstance(body, ControlSolve | BridgeSolve):
        return body.definitions
    return ()


def _execs(body: object) -> Iterator[tuple[Exec, str]]:
    for definition in _definitions(body):
        for step in definition.execs:
            yield step, "a build step (LLB exec op)"
    if isinstance(body, ContainerStart):
        yield body.exec, "a build container (NewContainer/ExecProcess)"


def _sources(body: object) -> Iterator[tuple[Source, str]]:
    for definition in _definitions(body):
        for source in definition.sources:
            yield source, "an LLB source"
    if isinstance(body, ImageResolve):
        for source in body.sources:
            yield source, "an image or source the frontend resolves"


def _attrs(body: object) -> Mapping[str, str]:
    if isinstance(body, ControlSolve):
        return body.frontend_attrs
    if isinstance(body, BridgeSolve):
        return body.frontend_opt
    return {}


def _entitlements(body: object) -> tuple[str, ...]:
    return body.entitlements if isinstance(body, ControlSolve) else ()


# --- isolation ------------------------------------------------------------------------


def _first_exec(body: object, matches: Callable[[Exec], bool], how: str) -> str | None:
    """`{where} {how}` for the first build step `matches`; None when there is none."""
    for step, where in _execs(body):
        if matches(step):
            return f"{where} {how}"
    return None


def _refuse(rule: str, refused: str | None, fix: str) -> Decision:
    return ALLOW if refused is None else deny(rule, refused, fix)


def check_network_host(subject: Subject) -> Decision:
    """`build.network-host` on BuildKit calls (the rule itself is in `images`)."""
    body = subject.body
    refused: str | None
    if "network.host" in _entitlements(body):
        refused = "a build that asks for the network.host entitlement (--allow network.host)"
    elif _attrs(body).get("force-network-mode") == "host":
        refused = "a build on the host network (force-network-mode=host, --network host)"
    else:
        refused = _first_exec(body, lambda step: step.network == NET_HOST, "on the host network")
    return _refuse(
        "build.network-host",
        refused,
        "Build on the default network (no --network, no RUN --network=host)",
    )


def check_insecure(subject: Subject) -> Decision:
    body = subject.body
    refused: str | None
    if "security.insecure" in _entitlements(body):
        refused = "a build that asks for the security.insecure entitlement"
    else:
        refused = _first_exec(
            body,
            lambda step: step.security == SECURITY_INSECURE,
            "in insecure (privileged) mode",
        )
    return _refuse(
        "build.insecure",
        refused,
        "Run build steps in the sandbox (no RUN --security=insecure, no --allow security.insecure)",
    )


def check_devices(subject: Subject) -> Decision:
    body = subject.body
    for entitlement in _entitlements(body):
        if entitlement == "device" or entitlement.startswith("device="):
            return deny(
                "build.devices",
                f"a build that asks for the {entitlement} entitlement (host devices)",
                "Build without host devices",
            )
    for step, where in _execs(body):
        if step.devices:
            return deny(
                "build.devices",
                f"{where} with the devices {', '.join(step.devices)[:200]}",
                "Build without host devices",
            )
    for entitlement in _entitlements(body):
        if entitlement not in ("network.host", "security.insecure"):
            return deny(
                "build.devices",
                f"a build that asks for the entitlement {entitlement[:100]!r}",
                "Only network.host and security.insecure exist, and both are refused here",
            )
    return ALLOW


def _size(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        return None


def frontend_ulimits(attrs: Mapping[str, str]) -> list[tuple[str, int, int]]:
    """The Dockerfile frontend's `ulimit` attribute (buildx --ulimit): comma-separated
    `name=soft[:hard]` (hard defaults to soft). ValueError for what does not read so."""
    out: list[tuple[str, int, int]] = []
    for entry in filter(None, (attrs.get("ulimit") or "").split(",")):
        name, equals, values = entry.partition("=")
        soft, colon, hard = values.partition(":")
        try:
            low = int(soft)
            high = int(hard) if colon else low
        except ValueError:
            raise ValueError(f"{entry[:80]!r} is not name=soft:hard") from None
        if not equals or not name:
            raise ValueError(f"{entry[:80]!r} is not name=soft:hard")
        out.append((name.strip().lower(), low, high))
    return out


def check_cgroup_and_limits(subject: Subject) -> Decision:
    attrs = _attrs(subject.body)
    if attrs.get("cgroup-parent"):
        return deny(
            "build.cgroup-parent",
            f"a build in the cgroup {attrs['cgroup-parent'][:200]!r} (cgroup-parent)",
            "Leave --cgroup-parent unset; the daemon's own accounting applies",
        )
    for step, where in _execs(subject.body):
        if step.cgroup_parent:
            return deny(
                "build.cgroup-parent",
                f"{where} in the cgroup {step.cgroup_parent[:200]!r}",
                "Leave the cgroup parent unset",
            )
    limits = [(f"{where}'s ulimit", *limit) for step, where in _execs(subject.body)
              for limit in step.ulimits]  # fmt: skip
    try:
        limits += [("the build's --ulimit", *limit) for limit in frontend_ulimits(attrs)]
    except ValueError as error:
        return deny(
            "build.cgroup-parent", f"a build with ulimit {error}", "Name ulimits as name=soft:hard"
        )
    for where, name, soft, hard in limits:
        problem = ulimit_problem(name, soft, hard)
        if problem is not None:
            part, value, bound = problem
            return deny(
                "build.cgroup-parent",
                f"{where} {name} {part.lower()} {value}: {bound}",
                "Leave the ulimits at the daemon's defaults, or within the container bounds",
            )
    maximum = subject.settings.memory.maximum
    shm = attrs.get("shm-size")
    if maximum is not None and shm:
        size = _size(shm)
        if size is None or size > maximum:
            return deny(
                "build.cgroup-parent",
                f"a build with shm-size {shm[:40]} (the memory maximum is {maximum} bytes)",
                "Ask for at most the policy's memory maximum",
            )
    return ALLOW


# --- where the daemon fetches from ----------------------------------------------------


def _image_problem(reference: str, subject: Subject) -> str | None:
    registry = addresses.registry_of(reference)
    if registry is None or registry.lower() in subject.settings.registries:
        return None
    if addresses.is_internal(addresses.split_host_port(registry)):
        return (
            f"the registry {registry} of {reference[:200]!r} is a loopback, link-local or "
            "private address"
        )
    return None


def _url_problem(url: str, subject: Subject) -> str | None:
    if addresses.url_allowed(url, subject.settings.fetch_targets):
        return None
    host = addresses.url_host(url)
    if host is None or addresses.is_internal(host):
        return f"{url[:200]!r} is at a loopback, link-local or private address"
    return None


def source_problem(identifier: str, subject: Subject) -> str | None:
    """What is wrong with a source the daemon would fetch; None when it may."""
    scheme, sep, rest = identifier.partition("://")
    if not sep:
        return f"the source {identifier[:200]!r} names no scheme"
    if scheme == "docker-image":
        return _image_problem(rest, subject)
    if scheme in ("http", "https"):
        return _url_problem(identifier, subject)
    if scheme == "git":
        # BuildKit's git identifier is `git://host/path` whatever the transport.
        return _url_problem("https://" + rest, subject)
    if scheme in ("local", "oci-layout"):
        return None  # from the client's session (tenancy binds the session)
    return f"the source scheme {scheme[:40]!r}"


def _attr_sources(attrs: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """Sources named by frontend attributes: named contexts, the remote context, and the
    frontend image of `gateway.v0` (`source`) or of a BUILDKIT_SYNTAX build argument."""
    for key, value in attrs.items():
        if key.startswith("context:") or key == "context":
            if value.startswith(("docker-image://", "git://", "http://", "https://")):
                yield value, key
            elif key == "context" and value.startswith("git@"):
                yield "git://" + value[4:].replace(":", "/", 1), key
        elif key in ("source", "build-arg:BUILDKIT_SYNTAX") and value:
            yield "docker-image://" + value.split(" ", 1)[0], key


# The sources a Dockerfile names (FROM, `# syntax=`, ADD URL, git contexts) are made into
# LLB by the frontend inside the daemon and never cross the guard. BuildKit holds every
# source op of a Solve's job to that Solve's source policy (sourcepolicy/engine.go: the
# last matching ALLOW/DENY rule wins, converted sources are evaluated again), so the
# guard appends one of its own to Control.Solve: internal hosts denied, the policy's
# allowlists allowed again. Go regular expressions (RE2), anchored.
_SCHEMES = r"(?i)^(docker-image|https?|git)://([^/@]*@)?"
_INTERNAL_HOSTS = (
    r"localhost",
    r"[^/:.@\[\]]+",  # single label (also 2130706433, 0x7f000001)
    r"[^/:@]*\.(localhost|local|internal|localdomain|lan|home\.arpa)\.?",
    r"(0|10|127)(\.[0-9a-fx]*)*",
    r"0[0-9x][0-9a-fx]*(\.[0-9a-fx]*)*",  # octal and hexadecimal forms
    r"169\.254(\.[0-9]*)*",
    r"172\.(1[6-9]|2[0-9]|3[01])(\.[0-9]*)*",
    r"192\.168(\.[0-9]*)*",
    r"100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])(\.[0-9]*)*",
    r"(22[4-9]|2[3-5][0-9])(\.[0-9]*)*",
    r"\[[^/]*\]",  # IPv6 literals
)
INTERNAL_SOURCE: Final = _SCHEMES + "(" + "|".join(_INTERNAL_HOSTS) + r")(:[0-9]*)?([/#?].*)?$"
DENY, ALLOW_ACTION, REGEX = 1, 0, 2


def _policy_rule(action: int, pattern: str) -> bytes:
    selector = len_field(1, pattern.encode()) + varint(2 << 3) + varint(REGEX)
    return len_field(2, varint(1 << 3) + varint(action) + len_field(2, selector))


@lru_cache(maxsize=16)
def source_policy(settings: Settings) -> bytes:
    """SolveRequest.SourcePolicy (field 12) as the guard appends it (merged into the
    client's own policy, if any, after its rules)."""
    rules = _policy_rule(DENY, INTERNAL_SOURCE)
    for registry in sorted(settings.registries):
        rules += _policy_rule(ALLOW_ACTION, "^docker-image://" + re.escape(registry) + "/")
    for prefix in settings.fetch_targets:
        rules += _policy_rule(ALLOW_ACTION, "^" + re.escape(prefix))
    return len_field(12, varint(1 << 3) + varint(1) + rules)


def qualified(tag: str) -> str:
    """A familiar image name (`RepoTags`' spelling) as BuildKit's source identifiers
    spell it: `docker.io/library/` added for official images, `docker.io/` for others
    without a registry."""
    first, slash, _rest = tag.partition("/")
    if not slash:
        return f"docker.io/library/{tag}"
    if "." in first or ":" in first or first == "localhost":
        return tag
    return f"docker.io/{tag}"


def tenancy_source_policy(tags: Iterable[str], image_ids: Iterable[str]) -> bytes:
    """SolveRequest.SourcePolicy (field 12) denying images a tenant must not build from:
    other tenants' tags (with or without a digest), and any reference pinned to another
    tenant's image id by digest (moby's BuildKit resolves such a digest in the local
    image store). Appended after every other rule: the last match wins."""
    rules = b""
    for tag in sorted(set(tags)):
        pattern = "^docker-image://" + re.escape(qualified(tag)) + "(@.*)?$"
        rules += _policy_rule(DENY, pattern)
    for image_id in sorted(set(image_ids)):
        rules += _policy_rule(DENY, "^docker-image://.*@" + re.escape(image_id) + "$")
    return len_field(12, varint(1 << 3) + varint(1) + rules) if rules else b""


def check_sources(subject: Subject) -> Decision:
    decision = _check_sources(subject)
    body = subject.body
    if decision is not ALLOW or not isinstance(body, ControlSolve):
        return decision
    policy = source_policy(subject.settings)
    return rewrite(
        "build.sources",
        dataclasses.replace(body, appended=body.appended + policy),
        "source policy: the daemon refuses sources at internal addresses",
    )


def _check_sources(subject: Subject) -> Decision:
    body = subject.body
    for source, where in _sources(body):
        problem = source_problem(source.identifier, subject)
        if problem is not None:
            return _source_deny(f"{problem} ({where})")
    for identifier, key in _attr_sources(_attrs(body)):
        problem = source_problem(identifier, subject)
        if problem is not None:
            return _source_deny(f"{problem} (the frontend attribute {key})")
    if isinstance(body, ControlSolve | BridgeSolve) and body.frontend not in FRONTENDS:
        return _source_deny(f"the frontend {body.frontend[:100]!r}")
    for entry in _cache_entries(body):
        problem = _cache_problem(entry, subject)
        if problem is not None:
            return _source_deny(problem)
    return ALLOW


def _source_deny(refused: str) -> Decision:
    return deny(
        "build.sources",
        refused,
        "Build from public registries and URLs, or ask for the registry or URL to be "
        "allowlisted (registries:, fetch_targets:)",
    )


def _cache_entries(body: object) -> Iterator[tuple[CacheEntry, str]]:
    if isinstance(body, ControlSolve):
        for entry in body.cache_imports:
            yield entry, "cache import"
        for entry in body.cache_exports:
            yield entry, "cache export"
    elif isinstance(body, BridgeSolve):
        for entry in body.cache_imports:
            yield entry, "cache import"


def _cache_problem(item: tuple[CacheEntry, str], subject: Subject) -> str | None:
    entry, what = item
    ref = entry.attrs.get("ref")
    if ref:
        problem = _image_problem(ref, subject)
        if problem is not None:
            return f"{problem} ({what} of type {entry.type})"
    for name in CACHE_URL_ATTRS:
        url = entry.attrs.get(name)
        if url:
            problem = _url_problem(url, subject)
            if problem is not None:
                return f"{problem} ({what} of type {entry.type}, {name})"
    return None


# --- exporters -------------------------------------------------------------------------


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "t")


def image_names(attrs: Mapping[str, str]) -> list[str]:
    """The image names an exporter's `name` attribute sets (comma separated)."""
    return [name.strip() for name in attrs.get("name", "").split(",") if name.strip()]


def check_exporters(subject: Subject) -> Decision:
    body = subject.body
    if not isinstance(body, ControlSolve):
        return ALLOW
    for exporter in body.exporters:
        if exporter.type not in EXPORTERS:
            return _exporter_deny(f"the exporter {exporter.type[:100]!r}")
        pushes = _true(exporter.attrs.get("push"))
        for name in image_names(exporter.attrs):
            problem = _image_problem(name, subject)
            if problem is not None and pushes:
                return _exporter_deny(f"a push where {problem}")
        if pushes and _true(exporter.attrs.get("registry.insecure")):
            for name in image_names(exporter.attrs):
                if addresses.registry_of(name) not in subject.settings.registries:
                    return _exporter_deny(f"an insecure (plain HTTP) push of {name[:200]!r}")
    return ALLOW


def _exporter_deny(refused: str) -> Decision:
    return deny(
        "build.exporters",
        refused,
        "Export to the daemon's images (--load, -t), to the client (--output type=local|tar|oci) "
        "or push to a public or allowlisted registry (registries:)",
    )


def check_shape(subject: Subject) -> Decision:
    if not isinstance(
        subject.body, ControlSolve | BridgeSolve | ImageResolve | ContainerStart
    ):  # pragma: no cover - the gRPC layer only sends these
        raise BodyShape("the BuildKit call", "a decoded BuildKit message")
    return ALLOW


RULES: tuple[Rule, ...] = (
    Rule(
        "build.grpc-shape",
        "build",
        ALL,
        "BuildKit calls are decided on the decoded message, never on raw bytes.",
        check_shape,
        profiles=frozenset({"baseline", "restricted", "permissive"}),
    ),
    Rule(
        "build.insecure",
        "build",
        ALL,
        "Insecure build steps run privileged: every capability and device of the host.",
        check_insecure,
    ),
    Rule(
        "build.devices",
        "build",
        ALL,
        "Device entitlements hand host devices (GPUs, disks) to build steps.",
        check_devices,
    ),
    Rule(
        "build.cgroup-parent",
        "build",
        ALL,
        "A chosen cgroup parent or shared memory beyond the memory maximum escapes the "
        "daemon's resource accounting and limits, as for containers.",
        check_cgroup_and_limits,
    ),
    Rule(
        "build.sources",
        "build",
        ALL,
        "Image references, URLs, git remotes, frontends and cache refs at loopback, "
        "link-local or private addresses turn the daemon into a request forger inside the "
        "host's network.",
        check_sources,
    ),
    Rule(
        "build.exporters",
        "build",
        frozenset({SOLVE}),
        "Pushes to internal registries reach services inside the host's network; unknown "
        "exporters may write where the policy cannot see.",
        check_exporters,
    ),
)
