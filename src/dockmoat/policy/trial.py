"""Requests for trying the policy without a daemon (`dockmoat policy check`, tests).

Routing and JSON decoding are the gateway's own (api.routing, api.gojson), so a
decision here is the decision the gateway would make for the same method,
target and body.
"""

from __future__ import annotations

from dockmoat.api import gojson
from dockmoat.api.query import parse_query
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import route_target
from dockmoat.errors import ProtocolError


def grpc_call(path: str, raw: bytes, listener: str) -> ApiRequest | None:
    """A BuildKit call on `/grpc` as the gateway decides it: the message decoded onto a
    `buildkit.*` route; None for a call whose messages carry nothing to decide.

    ProtocolError for a path the guard does not relay or a message it cannot read.
    """
    from dockmoat.buildkit import services
    from dockmoat.buildkit.decide import call_request
    from dockmoat.buildkit.relay import Call
    from dockmoat.buildkit.wire import WireError

    method = services.lookup("grpc", path)
    if method is None:
        raise ProtocolError(f"{path!r} is not a BuildKit call the guard relays on /grpc")
    try:
        message = method.decode(raw)
    except WireError as error:
        raise ProtocolError(f"a {method.short} message the guard cannot read: {error}") from None
    return call_request(Call("grpc", method, ()), message, ClientIdentity(listener=listener))


def routed(method: str, target: str, listener: str) -> ApiRequest:
    """METHOD TARGET routed as the gateway routes it; no headers, no body yet.

    ProtocolError when the gateway would refuse the target.
    """
    path, version, route, raw_query = route_target(method, target)
    return ApiRequest(
        method=method,
        raw_target=target,
        path=path,
        api_version=version,
        route=route,
        query=parse_query(raw_query) if raw_query else {},
        headers=(),
        client=ClientIdentity(listener=listener),
    )


def with_json_body(request: ApiRequest, raw: bytes) -> ApiRequest:
    """The request carrying `raw` as its JSON body; a blank body counts as none.

    ProtocolError when the gateway would refuse the body (gojson.loads).
    """
    return request._replace(
        body_json=gojson.loads(raw) if raw.strip() else None,
        body_raw=raw or None,
    )
