"""The one decision point: from a parsed request head (and body) to what is forwarded.

Every request goes through here before a byte of it goes upstream:
route -> query (+ form body) -> body decoding -> stage (tenancy) -> policy.
Whatever raises in the stage or the policy becomes a Deny (fail closed). The
request forwarded is the one evaluated: its target is re-serialised from the
routed path and the checked parameters, and a rewritten body replaces the
original. No I/O here except the stage's own awaited look-ups.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import quote

from dockmoat.api import gojson, reference
from dockmoat.api.bodies import (
    UNREADABLE_RULE,
    BodyUnreadable,
    BuildContextReader,
    BuildSources,
    ImageArchiveReader,
    build_args,
    session_build,
)
from dockmoat.api.endpoints import STREAMED_BODY
from dockmoat.api.engines import EngineVersion, show, too_old
from dockmoat.api.memo import LONGEST
from dockmoat.api.query import FORM_MEDIA_TYPE, encode_query, media_type, merge_form, parse_query
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import raw_query, route_path, route_target
from dockmoat.errors import (
    ProtocolError,
    StateError,
    UpstreamError,
    answer_message,
    http_status,
)
from dockmoat.gateway.sansio.http import RequestHead
from dockmoat.gateway.stages import Context, PermissivePolicy, Policy, Stage
from dockmoat.policy.decision import WOULD_DENY, Allow, Decision, Deny, Rewrite, WouldDeny

log = logging.getLogger("dockmoat.gateway")

_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"
_FORM_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
INTERNAL_ERROR: Final = "internal-error"
UNREACHABLE: Final = "upstream-unreachable"
STATE_UNWRITABLE: Final = "state-unwritable"
UNMODELED: Final = "api.unmodeled"
API_VERSION: Final = "system.api-version"

BodyPlan = Literal["none", "buffer", "stream"]
BodyReader = BuildContextReader | ImageArchiveReader


class Planned(NamedTuple):
    """A routed request head, before its body is read. (Per request: a NamedTuple,
    which is built faster than a frozen dataclass; see `http.RequestHead`.)"""

    request: ApiRequest
    body_plan: BodyPlan
    form: bool


class Outcome(NamedTuple):
    """What to do with a request: the decision, and when not denied what to send."""

    decision: Decision
    request: ApiRequest
    target: str
    body: bytes | None  # bytes to send instead of the client's body; None = relay as read
    rules: tuple[str, ...]


def plan(
    head: RequestHead,
    client: ClientIdentity,
    policy: Policy,
    stage: Stage | None = None,
) -> Planned:
    """Route the head and decide how its body is read. ProtocolError means 400."""
    path, version, route, query_text = route_target(head.method, head.target)
    query = parse_query(query_text) if query_text else {}
    kind = media_type(head.content_type)
    if kind.startswith("multipart/"):
        # dockerd never takes multipart; Go could parse it into the form behind our back.
        raise ProtocolError("multipart bodies are not accepted")
    form = kind == FORM_MEDIA_TYPE and head.method in _FORM_METHODS
    # Positional: keyword arguments make this per-request construction dearer.
    request = ApiRequest(
        head.method, head.target, path, version, route, query, head.headers, client
    )
    if not head.has_body:
        return Planned(request, "none", form)
    needed = (
        policy.body_needed(route)
        or (stage is not None and stage.facts(request).body)
        or reference.reads_json_body(route.name)
    )
    if form or (needed and route.name not in STREAMED_BODY):
        return Planned(request, "buffer", form)
    return Planned(request, "stream", form)


def with_body(planned: Planned, body: bytes) -> ApiRequest:
    """The request with its buffered body read the way dockerd reads it."""
    request = planned.request
    if planned.form:
        # Go's ParseForm: body values first, then the URL's.
        return request._replace(
            query=merge_form(parse_query(body.decode("latin-1")), request.query),
            body_raw=body,
        )
    body_json = gojson.loads(body) if body.strip() else None
    return request._replace(body_json=body_json, body_raw=body)


def _apply(request: ApiRequest, rewrite: Rewrite) -> ApiRequest:
    changed = request
    if rewrite.path is not None:
        versioned = _versioned(request.api_version, rewrite.path)
        routed, _version, route = route_path(request.method, versioned)
        if route.name != request.route.name:
            raise ProtocolError(
                f"rewrite {rewrite.rule} changed the endpoint {request.route.name} -> {route.name}"
            )
        changed = changed._replace(path=routed, route=route)
    if rewrite.query is not None:
        changed = changed._replace(query=rewrite.query)
    if rewrite.body_json is not None:
        changed = changed._replace(body_json=rewrite.body_json, body_raw=None)
    return changed


def _versioned(version: str | None, path: str) -> str:
    return f"/v{version}{path}" if version is not None else path


def _encoded_path(version: str | None, path: str) -> str:
    """The routed path, with its version prefix, percent-encoded for the daemon."""
    return quote(_versioned(version, path), safe=_PATH_SAFE, errors="surrogateescape")


_encoded_path_memo = lru_cache(maxsize=4096)(_encoded_path)


def upstream_target(request: ApiRequest, *, requery: bool) -> str:
    """The target the daemon gets: percent-encoded routed path, checked parameters."""
    version, routed = request.api_version, request.path
    # Memoised for short paths only (see api/memo.py), checked inline: this runs per request.
    if len(routed) <= LONGEST and (version is None or len(version) <= LONGEST):
        path = _encoded_path_memo(version, routed)
    else:
        path = _encoded_path(version, routed)
    if requery:
        encoded = encode_query(request.query)
        return f"{path}?{encoded}" if encoded else path
    query_text = raw_query(request.raw_target)
    return f"{path}?{query_text}" if query_text is not None else path


#: Runs after the policy allowed a request (bind pins, gateway/pins.py): may Rewrite or Deny.
AfterPolicy = Callable[[ApiRequest, Policy], Awaitable[Decision]]


async def decide(
    request: ApiRequest,
    policy: Policy,
    stage: Stage | None,
    ctx: Context,
    *,
    form: bool,
    after: AfterPolicy | None = None,
    engine: EngineVersion | None = None,
) -> Outcome:
    """Stage, then policy, then `after`; fail closed. The returned target/body are what
    was evaluated."""
    rules: list[str] = []
    notes: list[str] = []
    original = request
    try:
        refused = unmodeled(request, engine)
        if refused is not None:
            return Outcome(refused, request, "", None, (refused.rule,))
        if stage is not None:
            staged = await stage.on_request(ctx, request)
            rules.append(staged.rule)
            if isinstance(staged, Deny):
                return Outcome(staged, request, "", None, tuple(rules))
            if isinstance(staged, Rewrite):
                request = _apply(request, staged)
                notes.extend(staged.notes)
        decision, request = _policy_step(request, policy, rules, notes)
        if isinstance(decision, Deny):
            return Outcome(decision, request, "", None, tuple(rules))
        if after is not None and request.body_json is not None:
            settled = await after(request, policy)
            if isinstance(settled, Deny):
                return Outcome(settled, request, "", None, (*rules, settled.rule))
            if isinstance(settled, Rewrite):
                rules.append(settled.rule)
                request = _apply(request, settled)
                notes.extend(settled.notes)
                if type(decision) is not WouldDeny:  # warn mode's record names the rule
                    decision = Rewrite(rule="+".join(rules), notes=tuple(notes))
        return _forwarded(original, request, decision, rules, notes, form=form)
    except UpstreamError as error:
        # The stage's look-up could not reach the daemon (it is down or restarting):
        # answered as a forward that cannot reach it is, 502, not a policy denial.
        deny = Deny(UNREACHABLE, answer_message(error), status=http_status(error))
        return Outcome(deny, request, "", None, (*rules, UNREACHABLE))
    except StateError as error:
        # Ownership could not be recorded: nothing that would change it goes on.
        log.error("%s %s refused: %s", request.method, request.raw_target, error)
        deny = Deny(
            rule=STATE_UNWRITABLE,
            message=f"dockmoat: {STATE_UNWRITABLE}: {error}; requests that change what a "
            "job owns are refused until it can be (reads go on)",
            status=http_status(error),
        )
        return Outcome(deny, request, "", None, (*rules, STATE_UNWRITABLE))
    except Exception:  # noqa: BLE001 - fail closed; _failed logs the traceback
        return _failed(request, rules)


def unmodeled(request: ApiRequest, engine: EngineVersion | None = None) -> Deny | None:
    """A 400 naming the first query parameter or JSON body field the reference table
    does not list (api/reference.py): what the guard has not read is never forwarded.
    Also a 400 for an API version below the upstream engine's own minimum (which the
    engine would refuse the same way), so `system.api-version` follows the engine."""
    minimum = too_old(request.api_version, engine)
    if minimum is not None:
        return Deny(
            API_VERSION,
            f"dockmoat: {API_VERSION}: API version {request.api_version!r} is older than "
            f"{show(minimum)}, the oldest the upstream engine serves. Use API version "
            f"{show(minimum)} or newer",
            status=400,
        )
    what = reference.unmodeled(request.route.name, request.query, request.body_json)
    if what is None:
        return None
    return Deny(
        UNMODELED,
        f"dockmoat: {UNMODELED}: {what} of {request.method} {request.route.name} is not in "
        "dockmoat's reference table of the Engine API, so the request was not forwarded. "
        "Leave it out, or use a dockmoat that models it",
        status=400,
    )


def _policy_step(
    request: ApiRequest, policy: Policy, rules: list[str], notes: list[str]
) -> tuple[Decision, ApiRequest]:
    """The policy's decision and the request it leaves (rewritten when it rewrites)."""
    decision = policy.evaluate(request)
    rules.append(decision.rule)
    if isinstance(decision, Rewrite):
        request = _apply(request, decision)
        notes.extend(decision.notes)
    return decision, request


def _forwarded(
    original: ApiRequest,
    request: ApiRequest,
    decision: Decision,
    rules: list[str],
    notes: list[str],
    *,
    form: bool,
) -> Outcome:
    """What goes upstream for an allowed request: exactly the request evaluated."""
    body: bytes | None = None
    if request.body_json is not None and request.body_raw is None:
        body = gojson.dumps(request.body_json)
    requery = form or request.query is not original.query
    if form:
        body = b""  # its parameters now travel in the query string, as evaluated
    target = upstream_target(request, requery=requery)
    final: Decision = decision
    if request is not original and not isinstance(decision, (Rewrite, WouldDeny)):
        final = Rewrite(rule="+".join(rules), notes=tuple(notes))
    return Outcome(final, request, target, body, tuple(rules))


def _failed(request: ApiRequest, rules: list[str]) -> Outcome:
    """Fail closed: called from an `except` block, so the log has the traceback."""
    log.exception("evaluating %s %s failed; denied", request.method, request.raw_target)
    deny = Deny(
        rule=INTERNAL_ERROR,
        message=f"dockmoat: {INTERNAL_ERROR}: the request could not be checked, "
        "so it was not forwarded. See the gateway's log.",
    )
    return Outcome(deny, request, "", None, (*rules, INTERNAL_ERROR))


def describe(decision: Decision) -> str:
    if isinstance(decision, Deny):
        return "error" if decision.status >= 500 else "deny"
    if isinstance(decision, Rewrite):
        return "rewrite"
    return WOULD_DENY if type(decision) is WouldDeny else "allow"


def notes_of(outcome: Outcome) -> tuple[str, ...]:
    return outcome.decision.notes if isinstance(outcome.decision, Rewrite) else ()


def json_answer(raw: bytes) -> Any:
    """A daemon's JSON answer (trusted, but still bounded by the caller)."""
    # dockerd answers UTF-8; decoding it here skips json's encoding detection.
    return json.loads(raw.decode("utf-8", "surrogatepass")) if raw.strip() else None


# --- streamed bodies that carry references (api/bodies.py) ---------------------

BODY_RULE: Final = UNREADABLE_RULE


#: `remote=` of a BuildKit build whose context (and Dockerfile) come through its session.
CLIENT_SESSION: Final = "client-session"


def body_reader(request: ApiRequest, policy: Policy, stage: Stage | None) -> BodyReader | None:
    """A reader for a streamed body whose content names objects, or None to stream it
    unread. A classic build's context is read wherever a policy or tenancy applies (its
    Dockerfile's images are pulled or resolved); a load's tarball where tenancy applies
    (the tags it sets). Raises BodyUnreadable for parameters that make it unreadable."""
    route = request.route.name
    if stage is None and isinstance(policy, PermissivePolicy):
        return None
    if route == "build.build":
        remote = request.param("remote")
        if request.param("version") == "2":
            if not remote:
                # dockerd hands the body to BuildKit's Dockerfile frontend, whose syntax
                # (mounts from images, `# syntax=` frontends) is not read here.
                raise BodyUnreadable(
                    "a BuildKit build (version=2) of a context sent as the request body is "
                    "not read; build through a session (buildx, DOCKER_BUILDKIT=1)"
                )
            if remote == CLIENT_SESSION:
                # Its Dockerfile comes through the session and is read there
                # (dockmoat.buildkit.filesync); what can be refused is refused now.
                session_build(request.param("dockerfile"), build_args(request.param("buildargs")))
                return None
        if remote:
            if stage is not None:
                # Allowed by the policy (fetch_targets), but for a tenant the Dockerfile
                # it holds could name another tenant's images, unread.
                raise BodyUnreadable(
                    "a build of a context the daemon fetches (remote=...): its Dockerfile "
                    "is not read; send the context from the client (docker build DIR)"
                )
            return None  # fetched by the daemon: the policy decided (build.remote-context)
        return BuildContextReader(
            request.param("dockerfile"), build_args(request.param("buildargs"))
        )
    if route == "images.load" and stage is not None:
        return ImageArchiveReader()
    return None


async def decide_body(
    reader: BodyReader,
    request: ApiRequest,
    policy: Policy,
    stage: Stage | None,
    ctx: Context,
) -> Decision:
    """The decision on what a streamed body names, once all of it was read. Fail closed."""

    async def decide() -> Decision:
        if isinstance(reader, ImageArchiveReader):
            archive = reader.finish()
            return await stage.check_archive_tags(ctx, request, archive) if stage else Allow()
        return await decide_build_sources(reader.finish(), request, policy, stage, ctx)

    return await _fail_closed(request, decide)


async def decide_build_sources(
    found: BuildSources,
    request: ApiRequest,
    policy: Policy,
    stage: Stage | None,
    ctx: Context,
) -> Decision:
    """The images and URLs a build's Dockerfile names, decided as what the builder does
    with them: an image the store lacks is pulled, a URL downloaded (the policy), every
    image must be the tenant's own or shared (tenancy). The Dockerfile came in a classic
    build's context, or from a BuildKit session (`dockmoat.buildkit.filesync`)."""

    async def decide() -> Decision:
        for source in found.sources:
            status, _headers, _body = await ctx.upstream.request(
                "GET", f"/images/{quote(source.ref, safe='')}/json"
            )
            if status == 404:
                # Not in the image store: the builder pulls it, as `docker pull` would.
                decision = policy.evaluate(_pull_request(request, source.ref))
                if isinstance(decision, Deny):
                    return replace(
                        decision,
                        message=f"{decision.message} ({source.where} of {found.dockerfile})",
                    )
            elif status != 200:
                raise UpstreamError(f"image look-up answered {status}")
        for url in found.urls:
            # The daemon downloads it, as it does an import's `fromSrc`.
            decision = policy.evaluate(_import_request(request, url.ref))
            if isinstance(decision, Deny):
                return replace(
                    decision, message=f"{decision.message} ({url.where} of {found.dockerfile})"
                )
        if stage is not None and found.sources:
            refs = [s.ref for s in found.sources]
            return await stage.check_build_sources(ctx, request, refs)
        return Allow()

    return await _fail_closed(request, decide)


async def _fail_closed(request: ApiRequest, decide: Callable[[], Awaitable[Decision]]) -> Decision:
    try:
        return await decide()
    except BodyUnreadable as error:
        return body_refusal(error)
    except UpstreamError as error:
        return Deny(UNREACHABLE, answer_message(error), status=http_status(error))
    except Exception:  # noqa: BLE001 - fail closed; logged with its traceback
        return _failed(request, []).decision


def body_refusal(error: BodyUnreadable) -> Deny:
    return Deny(
        BODY_RULE,
        f"dockmoat: {BODY_RULE}: {error}; the request was not forwarded",
        status=400,
    )


def _pull_request(request: ApiRequest, ref: str) -> ApiRequest:
    """`POST /images/create?fromImage=REF`: what the builder does for an image it lacks."""
    return _images_create(request, "fromImage", ref)


def _import_request(request: ApiRequest, url: str) -> ApiRequest:
    """`POST /images/create?fromSrc=URL`: the daemon downloads a URL, as ADD makes it."""
    return _images_create(request, "fromSrc", url)


def _images_create(request: ApiRequest, key: str, value: str) -> ApiRequest:
    base = _versioned(request.api_version, "/images/create")
    target = f"{base}?{key}={quote(value, safe='')}"
    path, version, route, query_text = route_target("POST", target)
    query = parse_query(query_text) if query_text else {}
    return ApiRequest("POST", target, path, version, route, query, (), request.client)
