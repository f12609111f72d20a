"""The tenancy rules as pure functions on decoded requests and resolved facts.

The route handlers (routes/) find out what a request refers to (with their
own calls to the engine, lookups.py), then these functions decide: forward it
with the tenant's label, name space and resolved full ids (Rewrite), or answer
as if the resource did not exist (Deny 404), or refuse a quota (Deny 403).
No I/O here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dockmoat.api import dockerfile
from dockmoat.api.gojson import compact
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite
from dockmoat.policy.policyfile import show_bytes
from dockmoat.tenancy import notfound
from dockmoat.tenancy.jsonkeys import get_field, set_field
from dockmoat.tenancy.model import PREDEFINED_NETWORKS, TENANT_LABEL, Tenant, is_full_id

RULE = "tenancy"
QUOTA_RULE = "tenancy.quota"


def replace_path_param(path: str, collection: str, old: str, new: str) -> str:
    """`/containers/<old>/json` -> `/containers/<new>/json` (the parameter follows it)."""
    head = f"/{collection}/"
    if not path.startswith(head + old):
        raise ValueError(f"{path!r} does not start with {head + old!r}")
    return head + new + path[len(head) + len(old) :]


# --- labels and filters ---------------------------------------------------------


def with_label(labels: Any, tenant: Tenant) -> dict[str, Any]:
    """A labels map carrying the tenant's ownership label (whatever the client put there)."""
    result = dict(labels) if isinstance(labels, dict) else {}
    result[TENANT_LABEL] = tenant.name
    return result


def decode_filters(query: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The `filters` parameter (first value, as Go reads it) as {key: [values]}.

    dockerd accepts both {"k": ["v"]} and the older {"k": {"v": true}}.
    """
    values = query.get("filters")
    if not values or not values[0]:
        return {}
    raw = json.loads(values[0])
    if not isinstance(raw, dict):
        raise ValueError("filters is not a JSON object")
    result: dict[str, list[str]] = {}
    for key, value in raw.items():
        if isinstance(value, list):
            result[str(key)] = [str(v) for v in value]
        elif isinstance(value, dict):
            result[str(key)] = [str(v) for v, on in value.items() if on]
        else:
            raise ValueError(f"filter {key!r} is neither a list nor a map")
    return result


def scoped_query(
    query: Mapping[str, list[str]],
    tenant: Tenant,
    *,
    name_filters: bool = False,
    ref_filters: Mapping[str, Callable[[str], str]] | None = None,
) -> dict[str, list[str]]:
    """The query with the tenant's label added to its `filters` (ANDed by the daemon).

    `name=` patterns are moved into the tenant's name space; `ref_filters` maps
    filter keys whose values name resources (network=, volume=) to a function
    giving their engine-side names.
    """
    filters = decode_filters(query)
    filters["label"] = [*filters.get("label", []), f"{TENANT_LABEL}={tenant.name}"]
    if name_filters and "name" in filters:
        filters["name"] = [tenant.namespace.name_filter(v) for v in filters["name"]]
    for key, convert in (ref_filters or {}).items():
        if key in filters:
            filters[key] = [convert(v) for v in filters[key]]
    result = {k: list(v) for k, v in query.items()}
    result["filters"] = [compact(filters)]
    return result


#: List filters that name an object dockerd looks up among all objects.
ORDER_FILTERS = ("since", "before")


def has_order_filters(query: Mapping[str, list[str]]) -> bool:
    """Whether a list's `filters` has `since` or `before` (a malformed one counts: the
    handler that reads it refuses it)."""
    try:
        filters = decode_filters(query)
    except ValueError:
        return True
    return any(key in filters for key in ORDER_FILTERS)


def with_filters(
    query: Mapping[str, list[str]], replaced: Mapping[str, list[str]]
) -> dict[str, list[str]]:
    """The query with some `filters` keys replaced (values already resolved)."""
    filters = decode_filters(query)
    filters.update(replaced)
    result = {k: list(v) for k, v in query.items()}
    result["filters"] = [compact(filters)]
    return result


def events_query(query: Mapping[str, list[str]], tenant: Tenant) -> dict[str, list[str]] | None:
    """`events` filters naming containers, volumes or networks moved into the job's space.

    No label filter here: volume and network events carry no labels; the stream
    is filtered per event instead. None when nothing needs changing.
    """
    filters = decode_filters(query)
    changed = False
    for key in ("container", "volume", "network"):
        if key in filters:
            filters[key] = [
                v if is_full_id(v) else tenant.namespace.engine_name(v) for v in filters[key]
            ]
            changed = True
    if not changed:
        return None
    result = {k: list(v) for k, v in query.items()}
    result["filters"] = [compact(filters)]
    return result


# --- image references -----------------------------------------------------------


def effective_tag(repo: str, tag: str | None) -> str:
    """The tag dockerd sets for `repo` and `tag` (images/{id}/tag, commit, import, pull).

    dockerd parses `repo` as a reference and, when `tag` is given, replaces the tag
    the reference carries (distribution's `WithTag`); otherwise the reference's own
    tag counts, `latest` when it has none. So `repo=app:v1&tag=` sets `app:v1`, and
    `repo=app:v1&tag=v2` sets `app:v2`, never `app:v1:v2`.
    """
    name = repo
    slash = name.rfind("/")
    colon = name.rfind(":")
    embedded = ""
    if colon > slash:
        name, embedded = name[:colon], name[colon + 1 :]
    return f"{name}:{tag or embedded or 'latest'}"


#: `/build?networkmode=` values that name no network (dockerd's build modes).
BUILD_NETWORK_MODES = frozenset({"", "default", "bridge", "host", "none"})


def build_network_ref(mode: str) -> bool:
    """Whether a build's `networkmode` names a network (or a container) to resolve."""
    return mode not in BUILD_NETWORK_MODES


def cache_from(raw: str | None) -> list[str]:
    """The image references of `/build?cachefrom=` (a JSON list; null and [] are none).

    BuildKit's builder in dockerd joins the entries with commas and splits them again,
    so one entry `a,b` is two references: split here the same way. An entry with `=`
    is a cache-import spec (`type=registry,ref=...`), not a reference: ValueError."""
    if raw is None or raw.strip() in ("", "null"):
        return []
    value = json.loads(raw)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("cachefrom must be a JSON list of image references")
    refs = [part.strip() for item in value for part in item.split(",") if part.strip()]
    for ref in refs:
        if "=" in ref:
            raise ValueError(f"cachefrom {ref!r} is not an image reference")
    return refs


CHANGES_RULE = "tenancy.image-changes"


def changes_problem(values: Sequence[str], tenant: Tenant) -> Deny | None:
    """`changes` of a tenant's commit or import (with the tenant's LABEL appended last),
    read as the builder reads them: ONBUILD triggers are refused (they run in later
    builds, where no check sees them), and the owner label must stay the last
    instruction on its own (a trailing continuation would swallow it)."""
    try:
        instructions, _escape = dockerfile.changes(list(values))
    except dockerfile.DockerfileError as error:
        return _changes_deny(f"changes the builder would refuse ({error})")
    for instruction in instructions:
        if instruction.keyword == "ONBUILD":
            return _changes_deny(f"an ONBUILD change ({instruction.arguments[:80]!r})")
    own = f"{TENANT_LABEL}={tenant.name}"
    if not instructions or (instructions[-1].keyword, instructions[-1].arguments) != (
        "LABEL",
        own,
    ):
        return _changes_deny("changes that run into the job's owner label (a continuation)")
    return None


def _changes_deny(what: str) -> Deny:
    return Deny(
        CHANGES_RULE,
        f"dockmoat: {CHANGES_RULE}: {what}: jobs may not set it on an image. "
        "Use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME or WORKDIR changes, each whole",
    )


# --- container create -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateRefs:
    """What a container create body refers to, to be resolved by routes/containers.py."""

    containers: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    # `EndpointsConfig.<net>.NetworkID` values (dockerd may attach by them).
    network_ids: frozenset[str] = frozenset()


def _container_mode_ref(mode: Any) -> str | None:
    if isinstance(mode, str) and mode.startswith("container:"):
        return mode[len("container:") :]
    return None


def _user_network(mode: Any) -> str | None:
    """A NetworkMode that names a user network (not a predefined mode or a container join)."""
    if not isinstance(mode, str) or not mode:
        return None
    if mode in PREDEFINED_NETWORKS or mode.startswith("container:"):
        return None
    return mode


def _link_parts(link: str) -> tuple[str, str | None]:
    name, sep, alias = link.partition(":")
    return name, (alias if sep else None)


def create_refs(body: Any) -> CreateRefs:
    """Container and network references in a container create (or update) body."""
    host = get_field(body, "HostConfig")
    containers: set[str] = set()
    networks: set[str] = set()
    if isinstance(host, dict):
        for mode_field in ("NetworkMode", "PidMode", "IpcMode"):
            ref = _container_mode_ref(get_field(host, mode_field))
            if ref:
                containers.add(ref)
        user_net = _user_network(get_field(host, "NetworkMode"))
        if user_net:
            networks.add(user_net)
        for entry in get_field(host, "VolumesFrom") or ():
            if isinstance(entry, str):
                containers.add(entry.split(":", 1)[0])
        for entry in get_field(host, "Links") or ():
            if isinstance(entry, str):
                containers.add(_link_parts(entry)[0])
    net_config = get_field(body, "NetworkingConfig")
    endpoints = get_field(net_config, "EndpointsConfig")
    network_ids: set[str] = set()
    if isinstance(endpoints, dict):
        for name, endpoint in endpoints.items():
            if name not in PREDEFINED_NETWORKS:
                networks.add(name)
            containers.update(endpoint_link_refs(endpoint))
            network_id = endpoint_network_id(endpoint)
            if network_id:
                network_ids.add(network_id)
    return CreateRefs(frozenset(containers), frozenset(networks), frozenset(network_ids))


def endpoint_network_id(endpoint: Any) -> str:
    """An endpoint config's `NetworkID` ("" when unset; a non-string is refused)."""
    value = get_field(endpoint, "NetworkID")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("EndpointConfig.NetworkID must be a string")
    return value


def rewrite_endpoint_network_id(endpoint: Any, network_ids: Mapping[str, str]) -> Any:
    """An endpoint config whose `NetworkID` names the tenant's network by its full id."""
    network_id = endpoint_network_id(endpoint)
    if not network_id or not isinstance(endpoint, dict):
        return endpoint
    out = dict(endpoint)
    set_field(out, "NetworkID", network_ids[network_id])
    return out


def endpoint_link_refs(endpoint: Any) -> set[str]:
    """Containers named by an endpoint's `Links` (`--link` on a user-defined network)."""
    links = get_field(endpoint, "Links")
    if not isinstance(links, list):
        return set()
    return {_link_parts(link)[0] for link in links if isinstance(link, str)}


def rewrite_endpoint_links(endpoint: Any, container_names: Mapping[str, str]) -> Any:
    """An endpoint config whose `Links` name the job's containers by their engine names."""
    links = get_field(endpoint, "Links")
    if not isinstance(endpoint, dict) or not isinstance(links, list):
        return endpoint
    out = dict(endpoint)
    new_links: list[Any] = []
    for link in links:
        if isinstance(link, str):
            ref, alias = _link_parts(link)
            link = container_names[ref] + ":" + (alias or ref.lstrip("/"))
        new_links.append(link)
    set_field(out, "Links", new_links)
    return out


@dataclass(frozen=True, slots=True)
class Resolved:
    """References resolved to the tenant's own resources (missing = not the tenant's)."""

    containers: Mapping[str, str] = field(default_factory=dict)  # ref -> full id
    container_names: Mapping[str, str] = field(default_factory=dict)  # ref -> engine name
    networks: Mapping[str, str] = field(default_factory=dict)  # ref -> engine name
    network_ids: Mapping[str, str] = field(default_factory=dict)  # NetworkID ref -> full id


def _volume_source(namespace_engine_name: Callable[[str], str], source: str) -> str:
    # A bind source is an absolute host path; anything else names a volume.
    if not source or source.startswith("/"):
        return source
    return namespace_engine_name(source)


def rewrite_binds(binds: Any, engine_name: Callable[[str], str]) -> Any:
    if not isinstance(binds, list):
        return binds
    out: list[Any] = []
    for bind in binds:
        if isinstance(bind, str) and ":" in bind:
            source, rest = bind.split(":", 1)
            out.append(_volume_source(engine_name, source) + ":" + rest)
        else:
            out.append(bind)
    return out


def rewrite_mounts(mounts: Any, engine_name: Callable[[str], str]) -> Any:
    if not isinstance(mounts, list):
        return mounts
    out: list[Any] = []
    for mount in mounts:
        if isinstance(mount, dict) and get_field(mount, "Type") == "volume":
            mount = dict(mount)
            source = get_field(mount, "Source")
            if isinstance(source, str) and source:
                set_field(mount, "Source", engine_name(source))
        out.append(mount)
    return out


def _deny_missing(refs: CreateRefs, resolved: Resolved) -> Deny | None:
    # dockerd refuses a create naming a missing container with 400 (a 404 there would
    # make the docker CLI believe the image is missing and try to pull it).
    for ref in sorted(refs.containers):
        if ref not in resolved.containers:
            return replace(notfound.no_such_container(ref), status=400)
    for ref in sorted(refs.networks):
        if ref not in resolved.networks:
            return replace(notfound.no_such_network(ref), status=400)
    for ref in sorted(refs.network_ids):
        if ref not in resolved.network_ids:
            return replace(notfound.no_such_network(ref), status=400)
    return None


def rewrite_host_config(host: dict[str, Any], tenant: Tenant, resolved: Resolved) -> dict[str, Any]:
    host = dict(host)
    engine_name = tenant.namespace.engine_name
    for mode_field in ("NetworkMode", "PidMode", "IpcMode"):
        mode = get_field(host, mode_field)
        ref = _container_mode_ref(mode)
        if ref is not None:
            set_field(host, mode_field, "container:" + resolved.containers[ref])
        elif mode_field == "NetworkMode" and _user_network(mode):
            set_field(host, mode_field, resolved.networks[mode])
    volumes_from = get_field(host, "VolumesFrom")
    if isinstance(volumes_from, list):
        new_from: list[Any] = []
        for entry in volumes_from:
            if isinstance(entry, str):
                ref, sep, mode = entry.partition(":")
                entry = resolved.containers[ref] + sep + mode
            new_from.append(entry)
        set_field(host, "VolumesFrom", new_from)
    links = get_field(host, "Links")
    if isinstance(links, list):
        new_links: list[Any] = []
        for entry in links:
            if isinstance(entry, str):
                ref, alias = _link_parts(entry)
                # dockerd links by name; the alias the client chose stays what it sees.
                entry = resolved.container_names[ref] + ":" + (alias or ref.lstrip("/"))
            new_links.append(entry)
        set_field(host, "Links", new_links)
    if get_field(host, "Binds") is not None:
        set_field(host, "Binds", rewrite_binds(get_field(host, "Binds"), engine_name))
    if get_field(host, "Mounts") is not None:
        set_field(host, "Mounts", rewrite_mounts(get_field(host, "Mounts"), engine_name))
    return host


def rewrite_create(
    body: Any,
    query: Mapping[str, list[str]],
    tenant: Tenant,
    resolved: Resolved,
) -> Decision:
    """Container create: label, name space, joins only between the tenant's own containers."""
    if not isinstance(body, dict):
        body = {}
    refs = create_refs(body)
    missing = _deny_missing(refs, resolved)
    if missing is not None:
        return missing
    new_body = copy.deepcopy(body)
    set_field(new_body, "Labels", with_label(get_field(new_body, "Labels"), tenant))
    host = get_field(new_body, "HostConfig")
    if isinstance(host, dict):
        set_field(new_body, "HostConfig", rewrite_host_config(host, tenant, resolved))
    net_config = get_field(new_body, "NetworkingConfig")
    endpoints = get_field(net_config, "EndpointsConfig")
    if isinstance(net_config, dict) and isinstance(endpoints, dict):
        renamed = {
            (name if name in PREDEFINED_NETWORKS else resolved.networks[name]): (
                rewrite_endpoint_network_id(
                    rewrite_endpoint_links(value, resolved.container_names),
                    resolved.network_ids,
                )
            )
            for name, value in endpoints.items()
        }
        net_config = dict(net_config)
        set_field(net_config, "EndpointsConfig", renamed)
        set_field(new_body, "NetworkingConfig", net_config)
    new_query = {k: list(v) for k, v in query.items()}
    notes = [f"label {TENANT_LABEL}={tenant.name}"]
    name = (query.get("name") or [""])[0]
    if name and tenant.namespace.prefix:
        new_query["name"] = [tenant.namespace.engine_name(name)]
        notes.append(f"name {name} -> {new_query['name'][0]}")
    return Rewrite(RULE, tuple(notes), body_json=new_body, query=new_query)


# --- volumes and networks -------------------------------------------------------


def rewrite_volume_create(body: Any, tenant: Tenant) -> Rewrite:
    new_body = dict(body) if isinstance(body, dict) else {}
    name = get_field(new_body, "Name")
    notes = [f"label {TENANT_LABEL}={tenant.name}"]
    if isinstance(name, str) and name:
        set_field(new_body, "Name", tenant.namespace.engine_name(name))
        notes.append(f"name {name} -> {tenant.namespace.engine_name(name)}")
    set_field(new_body, "Labels", with_label(get_field(new_body, "Labels"), tenant))
    return Rewrite(RULE, tuple(notes), body_json=new_body)


def rewrite_network_create(body: Any, tenant: Tenant) -> Decision:
    new_body = dict(body) if isinstance(body, dict) else {}
    name = get_field(new_body, "Name")
    if not isinstance(name, str) or not name:
        return Allow()  # dockerd refuses a nameless network itself
    if name in PREDEFINED_NETWORKS:
        return Allow()  # dockerd refuses these names ("pre-defined network")
    engine = tenant.namespace.engine_name(name)
    set_field(new_body, "Name", engine)
    set_field(new_body, "Labels", with_label(get_field(new_body, "Labels"), tenant))
    return Rewrite(
        RULE,
        (f"label {TENANT_LABEL}={tenant.name}", f"name {name} -> {engine}"),
        body_json=new_body,
    )


# --- quotas ---------------------------------------------------------------------


def memory_of(body: Any) -> int:
    """The memory limit a create/update body asks for (0 = none)."""
    host = get_field(body, "HostConfig")
    for source in (host, body):
        value = get_field(source, "Memory")
        if isinstance(value, int) and value > 0:
            return value
    return 0


def check_running_quota(tenant: Tenant, running: int) -> Decision:
    limit = tenant.quotas.running_containers
    if limit is not None and running >= limit:
        return Deny(
            f"{QUOTA_RULE}.running-containers",
            f"dockmoat: {QUOTA_RULE}.running-containers: job {tenant.name} already runs "
            f"{running} containers, its quota is {limit}. Stop or remove one first.",
        )
    return Allow()


def check_memory_quota(tenant: Tenant, current: Sequence[int], requested: int) -> Decision:
    limit = tenant.quotas.memory_bytes
    if limit is None:
        return Allow()
    if requested <= 0:
        return Deny(
            f"{QUOTA_RULE}.memory",
            f"dockmoat: {QUOTA_RULE}.memory: job {tenant.name} has a memory quota of "
            f"{show_bytes(limit)}, so every container needs a memory limit (--memory).",
        )
    total = sum(current) + requested
    if total > limit:
        return Deny(
            f"{QUOTA_RULE}.memory",
            f"dockmoat: {QUOTA_RULE}.memory: job {tenant.name} would use {show_bytes(total)} of "
            f"memory limits, its quota is {show_bytes(limit)}. Ask for less memory or remove a "
            "container.",
        )
    return Allow()


def check_volume_quota(tenant: Tenant, volumes: int) -> Decision:
    limit = tenant.quotas.volumes
    if limit is not None and volumes >= limit:
        return Deny(
            f"{QUOTA_RULE}.volumes",
            f"dockmoat: {QUOTA_RULE}.volumes: job {tenant.name} already has {volumes} "
            f"volumes, its quota is {limit}. Remove one first.",
        )
    return Allow()
