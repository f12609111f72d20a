"""Tenancy on exec instances: an exec is the job's when its container is.

dockerd knows an exec by its id alone; its inspect names the container, which
must be one of the job's (otherwise dockerd's own 404 for a missing exec).
"""

from __future__ import annotations

from dockmoat.api.request import ApiRequest
from dockmoat.gateway.stages import Context
from dockmoat.policy.decision import Allow, Decision
from dockmoat.tenancy import notfound
from dockmoat.tenancy.lookups import Lookups
from dockmoat.tenancy.model import Tenant
from dockmoat.tenancy.routes.base import Entry


async def by_id(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    params = request.route.params
    ref = params.get("id") or params.get("name") or ""
    status, answer = await look.engine.call("GET", f"/exec/{ref}/json")
    if status != 200 or not isinstance(answer, dict):
        return notfound.no_such_exec(ref)
    owned = {c.id for c in await look.owned_containers(tenant)}
    if answer.get("ContainerID") not in owned:
        return notfound.no_such_exec(ref)
    return Allow()


# An exec is created on its container (`containers.exec`, routes/containers.py).
ENTRIES: tuple[Entry, ...] = (
    Entry("exec.inspect", by_id),
    Entry("exec.start", by_id),
    Entry("exec.resize", by_id),
)

UNTOUCHED: frozenset[str] = frozenset()
