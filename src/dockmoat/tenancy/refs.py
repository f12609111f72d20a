"""Every reference of the reference table: resolved by tenancy, or refused (closed by construction).

`api/reference.py` lists each input of each endpoint that names an object (a
`Ref`). `RESOLVED` below says which of them the tenancy stage resolves in the
tenant's name space (routes/, rules.py); `unresolved` finds, in a request, a
reference the stage does not resolve, and the stage refuses the request for
tenants (`tenancy.unresolved-reference`). A field added to the table is refused
for tenants until tenancy resolves it; a unit test fails when an entry here names
no reference of the table. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from dockmoat.api import reference
from dockmoat.api.gojson import field as go_field
from dockmoat.api.reference import Closed, Field, Form, Kind, Ref
from dockmoat.api.request import ApiRequest
from dockmoat.policy.decision import Deny

RULE: Final = "tenancy.unresolved-reference"

#: Kinds that are not tenants' objects: host paths are the policy's (bind rules),
#: build ids and sessions are bound to their tenant by the BuildKit layer.
NOT_TENANCY: Final = frozenset({Kind.HOST_PATH, Kind.BUILD})

_CONTAINER_PATH = frozenset(
    (route, "path", "name")
    for route in reference.TABLE
    if route.startswith("containers.")
    and isinstance(getattr(reference.find(route, "path", "name"), "treatment", None), Ref)
)
#: Endpoints the policy closes whole whose container tenancy still resolves (a policy
#: file may open them); every other closed endpoint (swarm, plugins) is refused for
#: tenants even where a policy file opens it: tenancy does not read their bodies.
_CLOSED_RESOLVED = frozenset(
    {
        "containers.checkpoint_list",
        "containers.checkpoint_create",
        "containers.checkpoint_delete",
    }
)

#: (route, place, field name as the table spells it) resolved by the stage.
RESOLVED: Final[frozenset[tuple[str, str, str]]] = frozenset(
    {
        *_CONTAINER_PATH,
        ("containers.list", "query", "filters"),
        ("containers.prune", "query", "filters"),
        ("containers.rename", "query", "name"),
        ("containers.create", "query", "name"),
        ("containers.create", "body", "Image"),
        ("containers.create", "body", "HostConfig.Binds"),
        ("containers.create", "body", "HostConfig.Mounts[].Source"),
        ("containers.create", "body", "HostConfig.NetworkMode"),
        ("containers.create", "body", "HostConfig.PidMode"),
        ("containers.create", "body", "HostConfig.IpcMode"),
        ("containers.create", "body", "HostConfig.VolumesFrom"),
        ("containers.create", "body", "HostConfig.Links"),
        ("containers.create", "body", "NetworkingConfig.EndpointsConfig"),
        ("containers.create", "body", "NetworkingConfig.EndpointsConfig.*.Links"),
        ("containers.create", "body", "NetworkingConfig.EndpointsConfig.*.NetworkID"),
        ("exec.inspect", "path", "id"),
        ("exec.start", "path", "name"),
        ("exec.resize", "path", "name"),
        ("images.commit", "query", "container"),
        ("images.commit", "query", "repo"),
        ("images.commit", "query", "tag"),
        # `changes` are read as the builder reads them (api/dockerfile.py): ONBUILD and
        # anything that could swallow the owner label refused (rules.changes_problem).
        ("images.commit", "query", "changes"),
        ("images.create", "query", "changes"),
        # The config's Image on commit is metadata; the image is the container's.
        ("images.commit", "body", "Image"),
        ("images.list", "query", "filters"),
        ("images.prune", "query", "filters"),
        ("images.get_all", "query", "names"),
        ("images.get", "path", "name"),
        ("images.history", "path", "name"),
        ("images.inspect", "path", "name"),
        ("images.load", "body", "<stream>"),
        ("images.create", "query", "fromImage"),
        ("images.create", "query", "repo"),
        ("images.create", "query", "tag"),
        ("images.push", "path", "name"),
        ("images.push", "query", "tag"),
        ("images.tag", "path", "name"),
        ("images.tag", "query", "repo"),
        ("images.tag", "query", "tag"),
        ("images.delete", "path", "name"),
        # Registry look-ups name remote repositories, not the engine's objects.
        ("images.search", "query", "term"),
        ("distribution.inspect", "path", "name"),
        ("system.events", "query", "filters"),
        ("volumes.list", "query", "filters"),
        ("volumes.prune", "query", "filters"),
        ("volumes.inspect", "path", "name"),
        ("volumes.update", "path", "name"),
        ("volumes.delete", "path", "name"),
        ("volumes.create", "body", "Name"),
        ("build.build", "query", "t"),
        ("build.build", "query", "networkmode"),
        ("build.build", "query", "cachefrom"),
        # A classic build's Dockerfile (FROM, COPY --from) is read as the context passes
        # (api/bodies.py, gateway/pipeline.decide_body); BuildKit's comes through its session.
        ("build.build", "body", "<stream>"),
        ("networks.list", "query", "filters"),
        ("networks.prune", "query", "filters"),
        ("networks.inspect", "path", "id"),
        ("networks.delete", "path", "id"),
        ("networks.create", "body", "Name"),
        ("networks.connect", "path", "id"),
        ("networks.connect", "body", "Container"),
        ("networks.connect", "body", "EndpointConfig.Links"),
        ("networks.connect", "body", "EndpointConfig.NetworkID"),
        ("networks.disconnect", "path", "id"),
        ("networks.disconnect", "body", "Container"),
    }
)


def _open_references(route: str) -> tuple[Field, ...]:
    """The route's references tenancy must see resolved: not the policy's, not bound
    elsewhere (NOT_TENANCY), not one the stage resolves (RESOLVED)."""
    found = []
    for item in reference.references(route):
        treatment = item.treatment
        assert isinstance(treatment, Ref)
        if treatment.kind not in NOT_TENANCY and (route, item.place, item.name) not in RESOLVED:
            found.append(item)
    return tuple(found)


#: `_open_references` of every route, worked out once: the table is fixed, and this
#: runs before every tenant's request (a list's first-seen request spent ~10% of its
#: decision walking the route's references).
OPEN_REFERENCES: Final[dict[str, tuple[Field, ...]]] = {
    route: _open_references(route) for route in reference.TABLE
}


def _values(value: Any, parts: list[str]) -> Iterator[Any]:
    """The values at a table path (`a.b`, `a[].b`, `a.*.b`, `a.*[].b`), fields looked
    up as Go does."""
    if not parts:
        yield value
        return
    head, rest = parts[0], parts[1:]
    many = head.endswith("[]")
    name = head[:-2] if many else head
    if name == "*":
        found = list(value.values()) if isinstance(value, dict) else []
    else:
        got = go_field(value, name) if isinstance(value, dict) else None
        found = [] if got is None else [got]
    for item in found:
        if not many:
            yield from _values(item, rest)
        elif isinstance(item, list):
            for element in item:
                yield from _values(element, rest)


def carried(request: ApiRequest, item: Field) -> bool:
    """Whether the request sets this input to something (null, "" and empty are unset)."""
    if item.place == "path":
        return True
    if item.place == "query":
        values = request.query.get(item.name, [])
        return any(value not in ("", "null", "[]", "{}") for value in values)
    if item.place == "header":
        return request.header(item.name) is not None
    if item.name.startswith("<"):
        return True  # a streamed body: always carried
    treatment = item.treatment
    form = treatment.form if isinstance(treatment, Ref) else None
    return any(
        _names_object(form, value) for value in _values(request.body_json, item.name.split("."))
    )


def _names_object(form: Form | None, value: Any) -> bool:
    """Whether a body value, in its field's form, names an object (not a mode or a
    host path, which are the policy's)."""
    if value in (None, "", [], {}):
        return False
    if form is Form.MODE:
        return not isinstance(value, str) or value.startswith("container:")
    if form is Form.NETWORK_MODE:
        return not isinstance(value, str) or value not in _NETWORK_MODES
    if form is Form.BIND:
        entries = value if isinstance(value, list) else [value]
        return any(not (isinstance(e, str) and e.startswith("/")) for e in entries)
    if form is Form.MOUNT_SOURCE:
        return not (isinstance(value, str) and value.startswith("/"))
    return True


_NETWORK_MODES = frozenset({"default", "bridge", "host", "none"})


def unresolved(request: ApiRequest) -> Field | None:
    """The first reference of this request that tenancy does not resolve, or None."""
    route = request.route.name
    if reference.is_closed(route) and route not in _CLOSED_RESOLVED:
        return reference.find(route, "body", "*")
    known = OPEN_REFERENCES.get(route)
    for item in _open_references(route) if known is None else known:
        if carried(request, item):
            return item
    return None


def refusal(request: ApiRequest, item: Field) -> Deny:
    treatment = item.treatment
    if isinstance(treatment, Closed) and request.route.name == "plugins.inspect":
        # `docker inspect NAME` asks for a plugin last: for a job none exists, answered
        # as dockerd answers a missing one (as the policy does), so the CLI says
        # "No such object".
        name = request.route.params.get("name", "")
        return Deny(treatment.rule, f'plugin "{name}" not found', status=404)
    if isinstance(treatment, Closed):
        # The policy's own rule id: it is the rule that closes the endpoint; for jobs it
        # stays closed even where a policy file opens it.
        return Deny(
            treatment.rule,
            f"dockmoat: {treatment.rule}: {request.method} {request.path}: closed for "
            "jobs, whatever the policy says (tenancy does not read what such requests "
            "refer to). Ask the operator to run it outside the job",
        )
    assert isinstance(treatment, Ref)
    where = {"path": "path parameter", "query": "query parameter", "body": "body field"}
    what = f"the {where.get(item.place, item.place)} {item.name!r} of {request.route.name}"
    why = "a legacy top-level form of a HostConfig field" if item.legacy else ""
    return Deny(
        RULE,
        f"dockmoat: {RULE}: {what} names a {treatment.kind.value} ({treatment.form.value}"
        + (f"; {why}" if why else "")
        + "), which a job cannot use: dockmoat does not resolve it in the job's name space. "
        + (
            "Send it inside HostConfig."
            if item.legacy
            else "Leave it out, or name the object the way docs/tenancy.md lists."
        ),
    )
