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
