"""Tenancy on the system routes: events and disk usage in the job's names; the rest as is.

Events are filtered in the job's name space on the way in (the query) and read
back line by line (another job's events are dropped). Swarm objects and
plugins are no job's: the reference table closes them for jobs (refs.py),
whatever the policy opens.
"""

from __future__ import annotations

from typing import Any

from dockmoat.api.endpoints import ENDPOINTS
from dockmoat.api.request import ApiRequest
from dockmoat.gateway.stages import Context
from dockmoat.policy.decision import Allow, Decision, Rewrite
from dockmoat.tenancy import present, rules
from dockmoat.tenancy.lookups import Lookups
from dockmoat.tenancy.model import Tenant
from dockmoat.tenancy.routes.base import Entry


async def events(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    query = rules.events_query(request.query, tenant)
    if query is None:
        return Allow()
    return Rewrite(rules.RULE, ("event filters in the job's name space",), query=query)


def _event_line(
    look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context, line: dict[str, Any]
) -> Any:
    return present.present_event(line, tenant, look.image_facts(tenant))


def _df_answer(look: Lookups, request: ApiRequest, tenant: Tenant, answer: Any) -> Any:
    return present.present_df(answer, tenant, look.image_facts(tenant))


ENTRIES: tuple[Entry, ...] = (
    Entry("system.events", events, inline=True, answer="events", on_line=_event_line),
    Entry("system.df", inline=True, answer="json", on_answer=_df_answer),
)

#: Swarm objects, plugins and registry look-ups: closed for jobs by the reference
#: table (swarm, plugins) or naming nothing of the engine's (distribution).
_OTHER_RESOURCES = frozenset(
    {"swarm", "services", "nodes", "tasks", "secrets", "configs", "plugins", "distribution"}
)

UNTOUCHED: frozenset[str] = frozenset(
    {"system.options", "system.ping", "system.info", "system.version", "system.auth"}
    | {f"{resource}.{action}" for _m, _p, resource, action in ENDPOINTS
       if resource in _OTHER_RESOURCES}
)  # fmt: skip
