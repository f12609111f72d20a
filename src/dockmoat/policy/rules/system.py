"""Endpoint-level rules (which parts of the API are open) and `/auth`."""

from __future__ import annotations

from functools import lru_cache

from dockmoat.api.endpoints import ENDPOINTS
from dockmoat.api.memo import LONGEST
from dockmoat.policy import addresses
from dockmoat.policy.decision import Decision, Deny
from dockmoat.policy.rules.base import ALLOW, RESTRICTED, Rule, Subject, deny, text, top

ENDPOINT = frozenset({"endpoint"})
SWARM = ("swarm", "nodes", "services", "tasks", "secrets", "configs")


def _closed(rule_id: str, what: str) -> Decision:
    return deny(rule_id, what, "A policy file may switch this rule off knowingly")


def check_plugins(subject: Subject) -> Decision:
    path = subject.request.path
    if subject.route == "plugins.inspect" and path.startswith("/plugins/"):
        # `docker inspect NAME` asks every kind of object, plugins last: answered as
        # dockerd answers a plugin that does not exist (for this client none does), so
        # the CLI says "No such object" instead of this rule (issue 21). Nothing is sent.
        name = path[len("/plugins/") :].removesuffix("/json")
        return Deny("system.plugins", f'plugin "{name}" not found', status=404)
    return _closed(
        "system.plugins",
        f"{subject.request.method} {subject.request.path}: plugins run as root on the host",
    )


def check_swarm(subject: Subject) -> Decision:
    return _closed(
        "system.swarm",
        f"{subject.request.method} {subject.request.path}: swarm endpoints "
        "(swarm, nodes, services, tasks, secrets, configs)",
    )


def check_session(subject: Subject) -> Decision:
    request = subject.request
    if subject.route == "build.build":
        if request.param("version") != "2":
            return ALLOW  # the classic builder
        return deny(
            "system.session",
            "a BuildKit build (/build?version=2, DOCKER_BUILDKIT=1): BuildKit is switched "
            "off by this policy",
            "Build with the classic builder (DOCKER_BUILDKIT=0)",
        )
    return deny(
        "system.session",
        f"{subject.request.method} {subject.request.path}: BuildKit (/session, /grpc) is "
        "switched off by this policy",
        "Build with the classic builder (DOCKER_BUILDKIT=0), or switch the rule off; "
        "BuildKit calls are then read and decided by the build.* rules",
    )


#: dockerd 20.10 still serves API versions down to 1.12, and below 1.24 it keeps
#: behaviour removed since: a HostConfig in the body of `POST /containers/{id}/start`
#: is applied to the container (privileged, binds...), `POST /containers/{id}/copy`
#: reads files. No client of the last years asks for such a version.
MIN_API_VERSION = (1, 24)
EVERY_ROUTE = frozenset({f"{resource}.*" for _m, _p, resource, _a in ENDPOINTS} | {"unknown.*"})


def _version(text_value: str) -> tuple[int, ...] | None:
    # The router accepts odd spellings such as "1.41." or "01.041"; compare numerically.
    try:
        return tuple(int(part) for part in text_value.split(".") if part != "")
    except ValueError:
        return None


_version_memo = lru_cache(maxsize=256)(_version)


def check_api_version(subject: Subject) -> Decision:
    raw = subject.request.api_version
    if raw is None:
        return ALLOW  # no prefix: dockerd uses its own current version
    # Memoised for short versions only (see api/memo.py), checked inline: per request.
    version = _version_memo(raw) if len(raw) <= LONGEST else _version(raw)
    if version is not None and version >= MIN_API_VERSION:
        return ALLOW
    return deny(
        "system.api-version",
        f"API version {raw!r}: versions below 1.24 keep removed behaviour "
        "(a HostConfig given at container start is applied)",
        "Use API version 1.24 or newer (every current client negotiates one)",
    )


def check_unknown(subject: Subject) -> Decision:
    return deny(
        "system.unknown-endpoint",
        f"{subject.request.method} {subject.request.path}: an endpoint the Engine API "
        "does not define",
        "Use a documented Engine API endpoint",
    )


def check_auth_address(subject: Subject) -> Decision:
    address = text(top(subject), "ServerAddress", "") or ""
    if not address:
        return ALLOW
    host = addresses.url_host(address)
    registry = address.split("://", 1)[-1].split("/", 1)[0].lower()
    if registry in subject.settings.registries:
        return ALLOW
    if host is None or addresses.is_internal(host):
        return deny(
            "system.auth-address",
            f"a login the daemon sends to {address[:200]!r}, a loopback, link-local or "
            "private address",
            "Log in to a public registry, or ask for the registry to be allowlisted (registries:)",
        )
    return ALLOW


#: Checkpoint endpoints, and the start parameters that restore a checkpoint. On an
#: experimental daemon they make CRIU dump to, restore from and delete host folders
#: the request names (`checkpoint-dir`, `dir`, `CheckpointDir`), as root.
CHECKPOINT_ROUTES = frozenset(
    {
        "containers.checkpoint_create",
        "containers.checkpoint_list",
        "containers.checkpoint_delete",
    }
)
CHECKPOINT_START_PARAMS = ("checkpoint", "checkpoint-dir")


def check_checkpoints(subject: Subject) -> Decision:
    request = subject.request
    if subject.route in CHECKPOINT_ROUTES:
        return _closed(
            "system.checkpoints",
            f"{request.method} {request.path}: CRIU checkpoints, which read and write host folders",
        )
    for name in CHECKPOINT_START_PARAMS:
        if request.param(name):  # Go's r.Form.Get: the first value counts
            return _closed(
                "system.checkpoints",
                f"a start that restores a CRIU checkpoint (the {name} parameter)",
            )
    return ALLOW


RULES: tuple[Rule, ...] = (
    Rule(
        "system.api-version",
        "system",
        EVERY_ROUTE,
        "API versions below 1.24 keep removed, unsafe behaviour such as HostConfig at start.",
        check_api_version,
        reads_body=False,
    ),
    Rule(
        "system.unknown-endpoint",
        "system",
        frozenset({"unknown.*"}),
        "Endpoints the Engine API does not define are not forwarded.",
        check_unknown,
        reads_body=False,
    ),
    Rule(
        "system.plugins",
        "system",
        frozenset({"plugins.*"}),
        "Plugins are installed and run as root on the host.",
        check_plugins,
        reads_body=False,
        tags=ENDPOINT,
    ),
    Rule(
        "system.swarm",
        "system",
        frozenset(f"{resource}.*" for resource in SWARM),
        "Swarm turns the host into a cluster node and services bypass container rules.",
        check_swarm,
        reads_body=False,
        tags=ENDPOINT,
    ),
    Rule(
        "system.session",
        "system",
        frozenset({"session.*", "grpc.*", "build.build"}),
        "BuildKit builds off altogether (restricted). Where it is on, every BuildKit call is "
        "read and decided by the build.* rules.",
        check_session,
        profiles=RESTRICTED,
        reads_body=False,
        tags=ENDPOINT,
    ),
    Rule(
        "system.auth-address",
        "system",
        frozenset({"system.auth"}),
        "A login makes the daemon connect to the given server, also inside the host's network.",
        check_auth_address,
    ),
    Rule(
        "system.checkpoints",
        "system",
        CHECKPOINT_ROUTES | frozenset({"containers.start"}),
        "CRIU checkpoints (experimental daemons) dump to, restore from and delete host "
        "folders the request names.",
        check_checkpoints,
        reads_body=False,
    ),
)
