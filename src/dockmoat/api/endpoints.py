"""The endpoint table: every route dockerd registers, in dockerd's own order.

The order matters: dockerd's router (gorilla/mux) takes the FIRST route whose
path pattern and method both match, and image, container, volume and plugin
names are `{name:.*}` (they may contain slashes), so a later, more specific
looking route can be shadowed by an earlier one. The order below follows
dockerd 20.10's routers (checkpoint, container, image, system, volume, build,
session, swarm, plugin, distribution, grpc, network), plus the endpoints that
only the newest API spec has. `{x}` is gorilla's default `[^/]+`.
"""

from __future__ import annotations

from typing import Final

# (method, path template, resource, action)
Endpoint = tuple[str, str, str, str]

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    # checkpoint router (experimental; registered first)
    ("GET", "/containers/{name:.*}/checkpoints", "containers", "checkpoint_list"),
    ("POST", "/containers/{name:.*}/checkpoints", "containers", "checkpoint_create"),
    (
        "DELETE",
        "/containers/{name}/checkpoints/{checkpoint}",
        "containers",
        "checkpoint_delete",
    ),
    # container router
    ("HEAD", "/containers/{name:.*}/archive", "containers", "archive_info"),
    ("GET", "/containers/json", "containers", "list"),
    ("GET", "/containers/{name:.*}/export", "containers", "export"),
    ("GET", "/containers/{name:.*}/changes", "containers", "changes"),
    ("GET", "/containers/{name:.*}/json", "containers", "inspect"),
    ("GET", "/containers/{name:.*}/top", "containers", "top"),
    ("GET", "/containers/{name:.*}/logs", "containers", "logs"),
    ("GET", "/containers/{name:.*}/stats", "containers", "stats"),
    ("GET", "/containers/{name:.*}/attach/ws", "containers", "attach_ws"),
    ("GET", "/exec/{id:.*}/json", "exec", "inspect"),
    ("GET", "/containers/{name:.*}/archive", "containers", "archive_get"),
    ("POST", "/containers/create", "containers", "create"),
    ("POST", "/containers/{name:.*}/kill", "containers", "kill"),
    ("POST", "/containers/{name:.*}/pause", "containers", "pause"),
    ("POST", "/containers/{name:.*}/unpause", "containers", "unpause"),
    ("POST", "/containers/{name:.*}/restart", "containers", "restart"),
    ("POST", "/containers/{name:.*}/start", "containers", "start"),
    ("POST", "/containers/{name:.*}/stop", "containers", "stop"),
    ("POST", "/containers/{name:.*}/wait", "containers", "wait"),
    ("POST", "/containers/{name:.*}/resize", "containers", "resize"),
    ("POST", "/containers/{name:.*}/attach", "containers", "attach"),
    ("POST", "/containers/{name:.*}/copy", "containers", "copy"),
    ("POST", "/containers/{name:.*}/exec", "containers", "exec"),
    ("POST", "/exec/{name:.*}/start", "exec", "start"),
    ("POST", "/exec/{name:.*}/resize", "exec", "resize"),
    ("POST", "/containers/{name:.*}/rename", "containers", "rename"),
    ("POST", "/containers/{name:.*}/update", "containers", "update"),
    ("POST", "/containers/prune", "containers", "prune"),
    ("POST", "/commit", "images", "commit"),
    ("PUT", "/containers/{name:.*}/archive", "containers", "archive_put"),
    ("DELETE", "/containers/{name:.*}", "containers", "delete"),
    # image router
    ("GET", "/images/json", "images", "list"),
    ("GET", "/images/search", "images", "search"),
    ("GET", "/images/get", "images", "get_all"),
    ("GET", "/images/{name:.*}/get", "images", "get"),
    ("GET", "/images/{name:.*}/history", "images", "history"),
    ("GET", "/images/{name:.*}/json", "images", "inspect"),
    ("GET", "/images/{name:.*}/attestations", "images", "attestations"),
    ("POST", "/images/load", "images", "load"),
    ("POST", "/images/create", "images", "create"),
    ("POST", "/images/{name:.*}/push", "images", "push"),
    ("POST", "/images/{name:.*}/tag", "images", "tag"),
    ("POST", "/images/prune", "images", "prune"),
    ("DELETE", "/images/{name:.*}", "images", "delete"),
    # system router
    ("OPTIONS", "/{anyroute:.*}", "system", "options"),
    ("GET", "/_ping", "system", "ping"),
    ("HEAD", "/_ping", "system", "ping"),
    ("GET", "/events", "system", "events"),
    ("GET", "/info", "system", "info"),
    ("GET", "/version", "system", "version"),
    ("GET", "/system/df", "system", "df"),
    ("POST", "/auth", "system", "auth"),
    # volume router
    ("GET", "/volumes", "volumes", "list"),
    ("GET", "/volumes/{name:.*}", "volumes", "inspect"),
    ("POST", "/volumes/create", "volumes", "create"),
    ("POST", "/volumes/prune", "volumes", "prune"),
    ("PUT", "/volumes/{name:.*}", "volumes", "update"),
    ("DELETE", "/volumes/{name:.*}", "volumes", "delete"),
    # build router
    ("POST", "/build", "build", "build"),
    ("POST", "/build/prune", "build", "prune"),
    ("POST", "/build/cancel", "build", "cancel"),
    # session router
    ("POST", "/session", "session", "session"),
    # swarm router
    ("GET", "/swarm", "swarm", "inspect"),
    ("GET", "/swarm/unlockkey", "swarm", "unlockkey"),
    ("POST", "/swarm/init", "swarm", "init"),
    ("POST", "/swarm/join", "swarm", "join"),
    ("POST", "/swarm/leave", "swarm", "leave"),
    ("POST", "/swarm/update", "swarm", "update"),
    ("POST", "/swarm/unlock", "swarm", "unlock"),
    ("GET", "/services", "services", "list"),
    ("GET", "/services/{id}", "services", "inspect"),
    ("POST", "/services/create", "services", "create"),
    ("POST", "/services/{id}/update", "services", "update"),
    ("DELETE", "/services/{id}", "services", "delete"),
    ("GET", "/services/{id}/logs", "services", "logs"),
    ("GET", "/nodes", "nodes", "list"),
    ("GET", "/nodes/{id}", "nodes", "inspect"),
    ("DELETE", "/nodes/{id}", "nodes", "delete"),
    ("POST", "/nodes/{id}/update", "nodes", "update"),
    ("GET", "/tasks", "tasks", "list"),
    ("GET", "/tasks/{id}", "tasks", "inspect"),
    ("GET", "/tasks/{id}/logs", "tasks", "logs"),
    ("GET", "/secrets", "secrets", "list"),
    ("POST", "/secrets/create", "secrets", "create"),
    ("DELETE", "/secrets/{id}", "secrets", "delete"),
    ("GET", "/secrets/{id}", "secrets", "inspect"),
    ("POST", "/secrets/{id}/update", "secrets", "update"),
    ("GET", "/configs", "configs", "list"),
    ("POST", "/configs/create", "configs", "create"),
    ("DELETE", "/configs/{id}", "configs", "delete"),
    ("GET", "/configs/{id}", "configs", "inspect"),
    ("POST", "/configs/{id}/update", "configs", "update"),
    # plugin router
    ("GET", "/plugins", "plugins", "list"),
    ("GET", "/plugins/{name:.*}/json", "plugins", "inspect"),
    ("GET", "/plugins/privileges", "plugins", "privileges"),
    ("DELETE", "/plugins/{name:.*}", "plugins", "delete"),
    ("POST", "/plugins/{name:.*}/enable", "plugins", "enable"),
    ("POST", "/plugins/{name:.*}/disable", "plugins", "disable"),
    ("POST", "/plugins/pull", "plugins", "pull"),
    ("POST", "/plugins/{name:.*}/push", "plugins", "push"),
    ("POST", "/plugins/{name:.*}/upgrade", "plugins", "upgrade"),
    ("POST", "/plugins/{name:.*}/set", "plugins", "set"),
    ("POST", "/plugins/create", "plugins", "create"),
    # distribution router
    ("GET", "/distribution/{name:.*}/json", "distribution", "inspect"),
    # grpc router (BuildKit)
    ("POST", "/grpc", "grpc", "grpc"),
    # network router
    ("GET", "/networks", "networks", "list"),
    ("GET", "/networks/", "networks", "list"),
    ("GET", "/networks/{id:.+}", "networks", "inspect"),
    ("POST", "/networks/create", "networks", "create"),
    ("POST", "/networks/{id:.*}/connect", "networks", "connect"),
    ("POST", "/networks/{id:.*}/disconnect", "networks", "disconnect"),
    ("POST", "/networks/prune", "networks", "prune"),
    ("DELETE", "/networks/{id:.*}", "networks", "delete"),
)

# Endpoints whose request body is an opaque stream (tar archives, image
# tarballs, hijacked protocols): never buffered, relayed with backpressure.
STREAMED_BODY: Final[frozenset[str]] = frozenset(
    {
        "build.build",
        "images.load",
        "images.create",  # `docker import -` sends the tarball as the body
        "containers.archive_put",
        "plugins.create",
        "session.session",
        "grpc.grpc",
    }
)

# Endpoints that switch protocols (HTTP 101) or hijack the connection.
HIJACKING: Final[frozenset[str]] = frozenset(
    {
        "containers.attach",
        "containers.attach_ws",
        "exec.start",
        "session.session",
        "grpc.grpc",
    }
)
