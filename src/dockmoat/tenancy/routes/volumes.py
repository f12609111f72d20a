"""Tenancy on volumes: a volume is the job's by its label or the store's record.

Names are the job's name space's (`docker volume create data` makes the engine
volume of the job's name for `data`); a reference resolves to the engine name
or answers dockerd's own 404. Lists are filtered on the way back.
"""

from __future__ import annotations

from typing import Any

from dockmoat.api.request import ApiRequest
from dockmoat.gateway.stages import Context
from dockmoat.policy.decision import Decision, Deny, Rewrite
from dockmoat.tenancy import notfound, present, rules
from dockmoat.tenancy.jsonkeys import get_field
from dockmoat.tenancy.lookups import Lookups
from dockmoat.tenancy.model import Tenant
from dockmoat.tenancy.routes.base import Entry, prune


async def by_name(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    ref = request.route.params.get("name", "")
    engine_name = await look.volume(tenant, ref)
    if engine_name is None:
        return notfound.no_such_volume(ref)
    path = rules.replace_path_param(request.path, "volumes", ref, engine_name)
    return Rewrite(rules.RULE, (f"volume {ref} -> {engine_name}",), path=path)


async def create(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    if tenant.quotas.volumes is not None:
        _, answer = await look.engine.call("GET", "/volumes")
        volumes = answer.get("Volumes") if isinstance(answer, dict) else None
        recorded = frozenset(look.store.owned(tenant.name, "volume"))
        mine = [v for v in volumes or [] if present.volume_mine(v, tenant, recorded)]
        verdict = rules.check_volume_quota(tenant, len(mine))
        if isinstance(verdict, Deny):
            return verdict
    decision = rules.rewrite_volume_create(request.body_json, tenant)
    name = get_field(decision.body_json, "Name")
    if isinstance(name, str) and name:
        look.store.add(tenant.name, "volume", name)
    return decision


def _list_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    # The list is not scoped by query (a volume may be the job's by the store's record
    # alone): it is filtered here.
    recorded = frozenset(look.store.owned(tenant.name, "volume"))
    return present.present_volume_list(answer, tenant, recorded)


def _volume_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    return present.present_volume(answer, tenant) if isinstance(answer, dict) else answer


ENTRIES: tuple[Entry, ...] = (
    Entry("volumes.list", inline=True, answer="json", on_answer=_list_answer),
    Entry("volumes.inspect", by_name, answer="json", on_answer=_volume_answer),
    Entry("volumes.create", create, body=True, answer="json", on_answer=_volume_answer),
    Entry("volumes.update", by_name),
    Entry("volumes.delete", by_name),
    Entry("volumes.prune", prune, inline=True),
)

UNTOUCHED: frozenset[str] = frozenset()
