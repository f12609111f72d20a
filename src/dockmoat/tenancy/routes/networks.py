"""Tenancy on networks: a network is the job's by its label, named in its name space.

A reference resolves to the full id among the job's networks (the predefined
`bridge`, `host` and `none` are shared: usable, not removable) or answers
dockerd's own 404. Connect and disconnect resolve the container of the body,
and the endpoint's NetworkID and links, the same way.
"""

from __future__ import annotations

from typing import Any

from dockmoat.api.request import ApiRequest
from dockmoat.gateway.stages import Context
from dockmoat.policy.decision import Decision, Deny, Rewrite
from dockmoat.tenancy import notfound, present, rules
from dockmoat.tenancy.jsonkeys import get_field, set_field
from dockmoat.tenancy.lookups import Lookups
from dockmoat.tenancy.model import PREDEFINED_NETWORKS, Tenant, resolve_container, resolve_network
from dockmoat.tenancy.routes.base import Entry, prune


async def _resolve(
    look: Lookups, request: ApiRequest, tenant: Tenant, *, predefined: bool
) -> str | Deny:
    """The full id of the path's network (or a predefined network's name, where
    `predefined` lets it through), or dockerd's 404."""
    ref = request.route.params.get("id", "")
    if predefined and ref in PREDEFINED_NETWORKS:
        return ref
    net = resolve_network(ref, await look.owned_networks(tenant), tenant.namespace)
    return notfound.no_such_network(ref) if net is None else net.id


def _to(request: ApiRequest, net_name: str, body: Any = None) -> Rewrite:
    ref = request.route.params.get("id", "")
    path = rules.replace_path_param(request.path, "networks", ref, net_name)
    return Rewrite(rules.RULE, (f"network {ref} -> {net_name[:12]}",), body_json=body, path=path)


async def by_id(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    net_name = await _resolve(look, request, tenant, predefined=True)
    return net_name if isinstance(net_name, Deny) else _to(request, net_name)


async def delete(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    # The predefined networks are shared: a job may not remove them (dockerd's 404).
    net_name = await _resolve(look, request, tenant, predefined=False)
    return net_name if isinstance(net_name, Deny) else _to(request, net_name)


async def attach(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    """Connect and disconnect: the path's network and the body's container, links and
    endpoint NetworkID, all resolved in the job's name space."""
    net_name = await _resolve(look, request, tenant, predefined=True)
    if isinstance(net_name, Deny):
        return net_name
    body = dict(request.body_json) if isinstance(request.body_json, dict) else {}
    container = get_field(body, "Container")
    fact = resolve_container(
        str(container or ""), await look.owned_containers(tenant), tenant.namespace
    )
    if fact is None:
        return notfound.no_such_container(str(container or ""))
    set_field(body, "Container", fact.id)
    endpoint = get_field(body, "EndpointConfig")
    network_id = rules.endpoint_network_id(endpoint)
    if network_id:
        # dockerd may attach by the endpoint's NetworkID: it must name the same
        # network as the path, resolved in the tenant's name space.
        owned_nets = await look.owned_networks(tenant)
        named = resolve_network(network_id, owned_nets, tenant.namespace)
        if named is None or named.id != net_name:
            return notfound.no_such_network(network_id)
        endpoint = rules.rewrite_endpoint_network_id(endpoint, {network_id: named.id})
        set_field(body, "EndpointConfig", endpoint)
    refs = rules.endpoint_link_refs(endpoint)
    if refs:
        owned = await look.owned_containers(tenant)
        names: dict[str, str] = {}
        for ref in refs:
            linked = resolve_container(ref, owned, tenant.namespace)
            if linked is None:
                return notfound.no_such_container(ref)
            names[ref] = linked.names[0].lstrip("/") if linked.names else linked.id
        set_field(body, "EndpointConfig", rules.rewrite_endpoint_links(endpoint, names))
    return _to(request, net_name, body)


async def create(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    decision = rules.rewrite_network_create(request.body_json, tenant)
    if isinstance(decision, Rewrite):
        look.store.add(tenant.name, "network", str(get_field(decision.body_json, "Name")))
    return decision


def _list_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    return present.present_network_list(answer, tenant)


def _inspect_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    return present.present_network(answer, tenant) if isinstance(answer, dict) else answer


def _created(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    if isinstance(answer, dict):
        look.store.add(tenant.name, "network", str(answer.get("Id", "")))
    return answer


ENTRIES: tuple[Entry, ...] = (
    # Not scoped by query: the list is filtered on the way back.
    Entry("networks.list", inline=True, answer="json", on_answer=_list_answer),
    Entry("networks.inspect", by_id, answer="json", on_answer=_inspect_answer),
    Entry("networks.create", create, body=True, answer="json", on_answer=_created),
    Entry("networks.connect", attach, body=True),
    Entry("networks.disconnect", attach, body=True),
    Entry("networks.prune", prune, inline=True),
    Entry("networks.delete", delete),
)

UNTOUCHED: frozenset[str] = frozenset()
