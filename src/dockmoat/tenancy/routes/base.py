"""What one route table entry says: everything tenancy does for one Engine API route.

An `Entry` gathers, for one route name of `api/endpoints.py`, the request
handler (resolve names in the job's name space, rewrite, or answer as for a
missing object), whether that handler decides without I/O, whether it reads
the JSON body, how the answer comes back (`answer`, the stage's
`facts().answer`), and what rewrites or records it: the JSON answer, each
line of a stream, an error answer. The stage (stage.py) looks an entry up once
per hook and calls it; routes without an entry get `DEFAULT`.

Handlers are called only for a client under tenancy whose job is open (the
stage answers the others itself), and only after the reference table check
(refs.py), so every handler may assume its request names nothing unresolved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dockmoat.api.request import ApiRequest
from dockmoat.gateway.stages import Context, ResponseKind

__all__ = [
    "DEFAULT",
    "AnswerRewriter",
    "Entry",
    "ErrorFollowUp",
    "Handler",
    "LineHandler",
    "ResponseKind",
]
from dockmoat.policy.decision import Decision, Rewrite
from dockmoat.tenancy import rules
from dockmoat.tenancy.lookups import Lookups
from dockmoat.tenancy.model import Tenant

#: Resolves, rewrites or denies a request (it may look things up through `Lookups`;
#: what it keeps for the rest of the exchange goes in the `Context`'s metadata).
Handler = Callable[[Lookups, ApiRequest, Tenant, Context], Awaitable[Decision]]
#: A 2xx JSON answer as the job reads it (and what it records), for `on_json_response`.
AnswerRewriter = Callable[[Lookups, ApiRequest, Tenant, Any], Any]
#: What an error answer undoes (a claim made for the request), before it is rewritten.
ErrorFollowUp = Callable[[Lookups, ApiRequest, Tenant], None]
#: One decoded line of a streamed answer ("events", "load", "build"): the line to
#: send, or None to drop it.
LineHandler = Callable[[Lookups, ApiRequest, Tenant, Context, dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Entry:
    """Everything tenancy does for one route.

    `inline` and `answer` are constants, or functions of the request where the
    query decides (a list with `since`/`before` filters is looked up; a build
    without `-t` has no progress to read). They must depend on nothing else:
    the gateway reuses what they said while the client's tenant is the same.
    """

    route: str
    handler: Handler | None = None
    """None: the request goes as it is (once the reference table check passed)."""
    inline: bool | Callable[[ApiRequest], bool] = False
    """Whether `handler` decides without awaiting anything (the gateway's fast lane
    runs such decisions from a read callback). A route without a handler is inline."""
    body: bool = False
    """Whether `handler` reads the JSON body (the gateway buffers and decodes it)."""
    answer: ResponseKind | Callable[[ApiRequest], ResponseKind] = "none"
    """How a 2xx answer comes back through the stage (`RouteFacts.answer`)."""
    rewrites_errors: bool = True
    """Whether 4xx/5xx JSON answers come back through `on_json_response` (dockerd's
    messages name engine names and ids: they are read back in the job's names)."""
    on_answer: AnswerRewriter | None = None
    on_error: ErrorFollowUp | None = None
    on_line: LineHandler | None = None


#: The routes tenancy has nothing to add to: the reference table check alone decides
#: (a request that names an object tenancy does not resolve is refused; refs.py), the
#: answer goes back as dockerd wrote it, error messages read back in the job's names.
DEFAULT = Entry(route="*", inline=True)


def request_query(request: ApiRequest) -> dict[str, list[str]]:
    """A copy of the request's query, to be rewritten."""
    return {k: list(v) for k, v in request.query.items()}


def without_order_filters(request: ApiRequest) -> bool:
    """Whether a list decides inline: `since`/`before` filters are looked up (an
    existing foreign object must answer as a missing one); the query alone says
    whether there are any."""
    return not rules.has_order_filters(request.query)


async def prune(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    """A prune of the job's own objects only (by its label; no look-up)."""
    query = rules.scoped_query(request.query, tenant)
    return Rewrite(rules.RULE, (f"prune scoped to {tenant.name}",), query=query)
