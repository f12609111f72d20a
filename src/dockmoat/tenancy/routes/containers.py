"""Tenancy on containers: a container is the job's by its label, named in its name space.

Every route with a `name` path parameter resolves it among the job's own
containers to a full id (a rename between check and forward cannot redirect
the request) or answers dockerd's own 404. A create's references (image,
containers, networks, volumes) are resolved the same way, and a bind of the
daemon's socket becomes the job's own socket.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dockmoat.api.request import ApiRequest
from dockmoat.gateway.stages import Context
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite
from dockmoat.policy.rules.containers import create_bind_sources, rebind
from dockmoat.tenancy import notfound, present, rules
from dockmoat.tenancy.jsonkeys import get_field
from dockmoat.tenancy.lookups import Lookups, resolved_path
from dockmoat.tenancy.model import ContainerFact, Tenant, resolve_container, resolve_network
from dockmoat.tenancy.routes.base import (
    AnswerRewriter,
    Entry,
    prune,
    request_query,
    without_order_filters,
)
from dockmoat.tenancy.store import Kind

# --- the `name` path parameter: one of the job's containers --------------------


async def _resolve(look: Lookups, request: ApiRequest, tenant: Tenant) -> ContainerFact | Deny:
    ref = request.route.params.get("name", "")
    fact = resolve_container(ref, await look.owned_containers(tenant), tenant.namespace)
    return notfound.no_such_container(ref) if fact is None else fact


def _to_full_id(
    request: ApiRequest, fact: ContainerFact, query: dict[str, list[str]] | None = None
) -> Rewrite:
    ref = request.route.params.get("name", "")
    path = rules.replace_path_param(request.path, "containers", ref, fact.id)
    return Rewrite(
        rules.RULE,
        (f"container {ref} -> {fact.id[:12]}",),
        body_json=None,
        query=request_query(request) if query is None else query,
        path=path,
    )


async def by_name(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    fact = await _resolve(look, request, tenant)
    return fact if isinstance(fact, Deny) else _to_full_id(request, fact)


async def rename(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    fact = await _resolve(look, request, tenant)
    if isinstance(fact, Deny):
        return fact
    query = request_query(request)
    new = request.param("name")
    if new:
        query["name"] = [tenant.namespace.engine_name(new)]
    return _to_full_id(request, fact, query)


async def start(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    fact = await _resolve(look, request, tenant)
    if isinstance(fact, Deny):
        return fact
    if not fact.running:
        running = sum(1 for c in await look.owned_containers(tenant) if c.running)
        verdict = rules.check_running_quota(tenant, running)
        if isinstance(verdict, Deny):
            return verdict
    return _to_full_id(request, fact)


async def update(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    fact = await _resolve(look, request, tenant)
    if isinstance(fact, Deny):
        return fact
    decision = await _memory_quota(look, tenant, request.body_json, exclude=fact.id)
    if isinstance(decision, Deny):
        return decision
    return _to_full_id(request, fact)


async def _memory_quota(look: Lookups, tenant: Tenant, body: Any, exclude: str | None) -> Decision:
    if tenant.quotas.memory_bytes is None:
        return Allow()
    current: list[int] = []
    for fact in await look.owned_containers(tenant):
        if fact.id == exclude:
            continue
        status, answer = await look.engine.call("GET", f"/containers/{fact.id}/json")
        if status == 200:
            current.append(int(get_field(answer.get("HostConfig"), "Memory") or 0))
    return rules.check_memory_quota(tenant, current, rules.memory_of(body))


# --- create -------------------------------------------------------------------


async def create(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    body = request.body_json if isinstance(request.body_json, dict) else {}
    image = get_field(body, "Image")
    if isinstance(image, str) and image:
        visible, _ = await look.image_visible(tenant, image)
        if not visible:
            return notfound.no_such_image(image)
    refs = rules.create_refs(body)
    containers = await look.owned_containers(tenant) if refs.containers else []
    networks = await look.owned_networks(tenant) if refs.networks or refs.network_ids else []
    resolved_ids: dict[str, str] = {}
    resolved_names: dict[str, str] = {}
    for ref in refs.containers:
        fact = resolve_container(ref, containers, tenant.namespace)
        if fact is not None:
            resolved_ids[ref] = fact.id
            resolved_names[ref] = fact.names[0].lstrip("/") if fact.names else fact.id
    resolved_nets: dict[str, str] = {}
    for ref in refs.networks:
        net = resolve_network(ref, networks, tenant.namespace)
        if net is not None:
            resolved_nets[ref] = net.name
    network_ids: dict[str, str] = {}
    for ref in refs.network_ids:
        net = resolve_network(ref, networks, tenant.namespace)
        if net is not None:
            network_ids[ref] = net.id
    decision = await _memory_quota(look, tenant, body, exclude=None)
    if isinstance(decision, Deny):
        return decision
    for ref in _volume_names(body):
        look.store.add(tenant.name, "volume", tenant.namespace.engine_name(ref))
    decision = rules.rewrite_create(
        body,
        request.query,
        tenant,
        rules.Resolved(resolved_ids, resolved_names, resolved_nets, network_ids),
    )
    return _scoped_docker_socket(look, decision, tenant)


def _scoped_docker_socket(look: Lookups, decision: Decision, tenant: Tenant) -> Decision:
    """A bind of the daemon's socket becomes a bind of the job's own socket: tools
    that drive Docker from a container (testcontainers' Ryuk, CI helpers) then work
    under the job's policy and tenancy, seeing only the job's things. Listener
    tenants have no socket of their own: the policy refuses the bind as before."""
    if not isinstance(decision, Rewrite) or not isinstance(decision.body_json, dict):
        return decision
    own = look.socket_of(tenant.name) if look.socket_of is not None else None
    if own is None or not look.daemon_sockets:
        return decision
    sources = {
        source: own
        for source, _where in create_bind_sources(decision.body_json)
        if resolved_path(source) in look.daemon_sockets
    }
    if not sources:
        return decision
    return replace(
        decision,
        body_json=rebind(decision.body_json, sources),
        notes=(*decision.notes, f"docker socket -> the job's socket {own}"),
    )


def _volume_names(body: Any) -> list[str]:
    """Named volumes a create body mounts (implicitly created volumes become the job's)."""
    names: list[str] = []
    host = get_field(body, "HostConfig")
    for bind in get_field(host, "Binds") or ():
        if isinstance(bind, str) and ":" in bind and not bind.startswith("/"):
            names.append(bind.split(":", 1)[0])
    for mount in get_field(host, "Mounts") or ():
        if get_field(mount, "Type") == "volume":
            source = get_field(mount, "Source")
            if isinstance(source, str) and source:
                names.append(source)
    return names


# --- list ---------------------------------------------------------------------


async def list_(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    # `since`/`before` name a container dockerd looks up among all of them: a foreign
    # one would answer an empty list where a missing one answers 404 (an oracle).
    filters = rules.decode_filters(request.query)
    moved: dict[str, list[str]] = {}
    if any(key in filters for key in rules.ORDER_FILTERS):
        owned = await look.owned_containers(tenant)
        for key in rules.ORDER_FILTERS:
            for ref in filters.get(key, []):
                fact = resolve_container(ref, owned, tenant.namespace)
                if fact is None:
                    return notfound.no_such_container(ref)
                moved.setdefault(key, []).append(fact.id)
    query = rules.scoped_query(
        request.query,
        tenant,
        name_filters=True,
        ref_filters={
            "network": tenant.namespace.engine_name,
            "volume": tenant.namespace.engine_name,
        },
    )
    if moved:
        query = rules.with_filters(query, moved)
    return Rewrite(rules.RULE, (f"scoped to {tenant.name}",), query=query)


# --- answers ------------------------------------------------------------------


def _list_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    return present.present_container_list(answer, tenant)


def _inspect_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    return present.present_container(answer, tenant) if isinstance(answer, dict) else answer


def _record(kind: Kind) -> AnswerRewriter:
    """An answer whose `Id` is a new object of the job's (a container, an exec)."""

    def record(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
        if isinstance(answer, dict):
            look.store.add(tenant.name, kind, str(answer.get("Id", "")))
        return answer

    return record


def _stats_line(
    look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context, line: dict[str, Any]
) -> Any:
    return present.present_stats(line, tenant)


# Routes whose only tenancy is their `name` path parameter, resolved to the full id.
_BY_NAME = (
    "containers.checkpoint_list",
    "containers.checkpoint_create",
    "containers.checkpoint_delete",
    "containers.archive_info",
    "containers.export",
    "containers.changes",
    "containers.top",
    "containers.logs",
    "containers.attach_ws",
    "containers.archive_get",
    "containers.kill",
    "containers.pause",
    "containers.unpause",
    "containers.restart",
    "containers.stop",
    "containers.wait",
    "containers.resize",
    "containers.attach",
    "containers.copy",
    "containers.archive_put",
)

ENTRIES: tuple[Entry, ...] = (
    *(Entry(route, by_name) for route in _BY_NAME),
    Entry(
        "containers.list",
        list_,
        inline=without_order_filters,
        answer="json",
        on_answer=_list_answer,
    ),
    Entry("containers.inspect", by_name, answer="json", on_answer=_inspect_answer),
    # A container's stats are a stream of JSON lines, each read back in the job's names.
    Entry("containers.stats", by_name, answer="events", on_line=_stats_line),
    Entry("containers.create", create, body=True, answer="json", on_answer=_record("container")),
    Entry("containers.exec", by_name, answer="json", on_answer=_record("exec")),
    Entry("containers.start", start),
    Entry("containers.rename", rename),
    Entry("containers.update", update, body=True),
    # The answer is buffered as JSON although nothing in it is rewritten (today's
    # behaviour; a 2xx delete answers 204 with no body).
    Entry("containers.delete", by_name, answer="json"),
    Entry("containers.prune", prune, inline=True),
)

#: Container routes tenancy leaves to the default (none: every one names a container).
UNTOUCHED: frozenset[str] = frozenset()
