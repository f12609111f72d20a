"""Decisions on BuildKit calls: the policy's build rules, then tenancy's ownership.

`Builds` is the gateway's memory of who opened which BuildKit session and who
started which build (the ids are random, made by the client: the first tenant to
use one owns it). `BuildDecider` decides the calls of one upgraded connection:

- Control.Solve: the build rules (`policy/rules/build.py`), then its session (and
  the sessions of local sources) must be the tenant's own, its build ref becomes
  the tenant's, exported image names are claimed as `docker build -t` claims tags,
  and the tenant's label is added to the image (`label:dockmoat.tenant`);
- Status, ListenBuildHistory, UpdateBuildHistory, and every LLBBridge call (the
  build id is in the call's metadata): only the tenant's builds; another tenant's
  are "not found"; history events of other tenants' builds are dropped;
- DiskUsage and Prune: the build cache is shared by all tenants and owned by none
  (as for `/build/prune`), so a tenant sees none of it and prunes nothing;
- `/session` calls (the daemon calling the client) were bound when the session
  was opened (`Builds.bind`).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from dockmoat.api.bodies import (
    DEFAULT_DOCKERFILE,
    BodyUnreadable,
    BuildSources,
    build_args,
    session_dockerfile,
)
from dockmoat.api.request import ApiRequest, ClientIdentity, Route
from dockmoat.buildkit import grpc, messages
from dockmoat.buildkit.filesync import (
    DIR_NAME,
    DOCKERFILE_DIR,
    FILESYNC_DIFFCOPY,
    FILESYNC_TARSTREAM,
    DockerfileWatch,
)
from dockmoat.buildkit.messages import (
    BridgeSolve,
    ContainerStart,
    ContentRead,
    ControlSolve,
    DockerfileRead,
    ImageResolve,
    Message,
    RefOnly,
)
from dockmoat.buildkit.relay import (
    BODY_RULE,
    PASS,
    Answer,
    AnswerWatch,
    Call,
    Refuse,
    Replace,
    Verdict,
)
from dockmoat.buildkit.services import BRIDGE, CONTROL
from dockmoat.buildkit.wire import WireError, string_map_field
from dockmoat.policy.decision import Decision, Deny, Rewrite
from dockmoat.policy.rules.build import image_names, tenancy_source_policy

log = logging.getLogger(__name__)

SESSION_HEADER: Final = "X-Docker-Expose-Session-Uuid"
BUILD_ID_METADATA: Final = "buildkit-controlapi-buildid"
TENANT_LABEL: Final = "dockmoat.tenant"
SESSION_RULE: Final = "tenancy.build-session"
BUILD_RULE: Final = "tenancy.build"
#: Exporters whose `name` tags images in the daemon's store.
IMAGE_EXPORTERS: Final = frozenset({"moby", "image", "docker"})
MAX_REMEMBERED: Final = 65536
#: /build?version=2 requests remembered until their session ends (each is a whole
#: request: fewer than ids).
MAX_CLASSIC: Final = 4096
MAX_CLASSIC_PER_OWNER: Final = 64
#: A version=2 build whose session has not connected this long is forgotten.
UNCONNECTED_TTL: Final = 600.0


SourceCheck = Callable[[ApiRequest, BuildSources], Awaitable[Decision]]
"""Decides what a build's Dockerfile names (gateway.pipeline.decide_build_sources)."""


@runtime_checkable
class Policy(Protocol):
    def evaluate_build(self, request: ApiRequest) -> Decision: ...


class NoBuilds:
    """The policy of a gateway whose policy object cannot decide BuildKit calls."""

    def evaluate_build(self, request: ApiRequest) -> Decision:
        return Deny(
            "build.grpc-shape",
            "dockmoat: build.grpc-shape: this gateway's policy does not decide BuildKit calls. "
            "Nothing was forwarded",
        )


@runtime_checkable
class BuildTenancy(Protocol):
    """What a gateway stage offers BuildKit calls (tenancy's stage does)."""

    def build_owner(self, client: ClientIdentity) -> str | Deny | None: ...

    def claim_build_tag(self, client: ClientIdentity, tag: str) -> Awaitable[Decision]: ...

    def release_build_tags(self, client: ClientIdentity, tags: list[str]) -> Awaitable[None]: ...

    def foreign_images(
        self, client: ClientIdentity
    ) -> Awaitable[tuple[frozenset[str], frozenset[str]]]: ...

    def build_ended(self, client: ClientIdentity, built: list[str]) -> Awaitable[None]: ...


@dataclass(slots=True)
class Builds:
    """Which owner opened each session and started each build (bounded, oldest dropped).

    The owner is the tenant's name, or "" for clients without tenancy (who still
    cannot use a tenant's session). Ids are random (made by BuildKit's client, 25
    characters of base 36) and the first owner to name one keeps it: clients start
    the session and the build concurrently, so either may come first."""

    sessions: OrderedDict[str, str] = field(default_factory=OrderedDict)
    refs: OrderedDict[str, str] = field(default_factory=OrderedDict)
    classic: OrderedDict[str, ApiRequest] = field(default_factory=OrderedDict)
    connections: dict[str, int] = field(default_factory=dict)
    """Open `/session` connections per session id."""
    classic_at: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    build_sessions: OrderedDict[str, str] = field(default_factory=OrderedDict)
    """The session of each build id (its Control.Solve's), for the frontend's LLBBridge
    calls, which name only the build."""
    solves: OrderedDict[str, ApiRequest | None] = field(default_factory=OrderedDict)
    """A buildx Solve's Dockerfile build per session, as the `/build?version=2` request it
    amounts to; None where a session serves several (which one a fetch is for is not
    known). Read for readable refusals only: its Solve carries the source policy."""
    """The `/build?version=2` request each session serves (one build per session: the
    daemon's fetch of the Dockerfile does not say which build it is for)."""
    blobs: OrderedDict[str, str] = field(default_factory=OrderedDict)
    """Digests of blobs of an owner's build records (as shown in its build history)."""

    @staticmethod
    def _claim(table: OrderedDict[str, str], key: str, owner: str) -> bool:
        known = table.get(key)
        if known is not None:
            table.move_to_end(key)
            return known == owner
        table[key] = owner
        if len(table) > MAX_REMEMBERED:
            table.popitem(last=False)
        return True

    def _forget_unconnected(self) -> None:
        """Builds whose session never connected, long after dockerd gave up waiting for
        it (it waits seconds for a session before its fetch fails): their slots go."""
        cutoff = self.clock() - UNCONNECTED_TTL
        for session in [s for s, at in self.classic_at.items() if at < cutoff]:
            if not self.connections.get(session):
                self.classic.pop(session, None)
                self.classic_at.pop(session, None)

    def session_opened(self, session: str) -> None:
        self.connections[session] = self.connections.get(session, 0) + 1

    def session_ended(self, session: str) -> None:
        """One of a session's connections closed. With its last, its build's Dockerfile
        was fetched or never will be: the build is forgotten (the id stays bound to its
        owner). Never earlier: the daemon may fetch over another of its connections."""
        left = self.connections.get(session, 0) - 1
        if left > 0:
            self.connections[session] = left
            return
        self.connections.pop(session, None)
        self.classic.pop(session, None)
        self.classic_at.pop(session, None)
        self.solves.pop(session, None)

    def saw_solve(self, session: str, request: ApiRequest) -> None:
        self.solves[session] = None if session in self.solves else request
        if len(self.solves) > MAX_CLASSIC:
            self.solves.popitem(last=False)

    def build_session(self, ref: str, session: str) -> None:
        self.build_sessions[ref] = session
        if len(self.build_sessions) > MAX_CLASSIC:
            self.build_sessions.popitem(last=False)

    def claim_session(self, session: str, owner: str) -> bool:
        return self._claim(self.sessions, session, owner)

    def saw_blobs(self, digests: set[str], owner: str) -> None:
        for digest in digests:
            self._claim(self.blobs, digest, owner)

    def claim_ref(self, ref: str, owner: str) -> bool:
        return self._claim(self.refs, ref, owner)

    def owns_ref(self, ref: str, owner: str) -> bool:
        return self.refs.get(ref) == owner

    def bind(self, request: ApiRequest, owner: str) -> Deny | None:
        """The HTTP side: `/session` claims its id; `/build?session=` must name the owner's."""
        route = request.route.name
        if route == "session.session":
            session = request.header(SESSION_HEADER) or ""
            if not session:
                return _session_deny(
                    "a BuildKit session without an id (X-Docker-Expose-Session-Uuid)"
                )
            if not self.claim_session(session, owner):
                return _session_deny(f"the BuildKit session {session[:80]} is another client's")
        elif route == "build.build":
            named = request.param("session")
            if named and not self.claim_session(named, owner):
                return _session_deny(
                    f"a build with the session {named[:80]}, which you did not open"
                )
            if named and request.param("version") == "2":
                if named in self.classic:
                    return _session_deny(
                        f"a second build with the session {named[:80]} (one build a session)"
                    )
                # Never evicted (a build whose record was dropped would fetch its
                # Dockerfile unread): bounded per owner and in all, refused beyond.
                self._forget_unconnected()
                mine = sum(1 for r in self.classic.values() if self.sessions.get(
                    r.param("session") or "") == owner)  # fmt: skip
                if mine >= MAX_CLASSIC_PER_OWNER or len(self.classic) >= MAX_CLASSIC:
                    return Deny(
                        SESSION_RULE,
                        f"dockmoat: {SESSION_RULE}: too many BuildKit builds (version=2) in "
                        "flight; wait for one to end",
                        status=429,
                    )
                self.classic[named] = request
                self.classic_at[named] = self.clock()
        return None


def _session_deny(refused: str) -> Deny:
    return Deny(
        SESSION_RULE,
        f"dockmoat: {SESSION_RULE}: {refused}. A build uses the session its own client "
        "opened through this socket",
    )


def owner_of(stage: object, client: ClientIdentity) -> tuple[str, BuildTenancy | None] | Deny:
    """The owner key of a client and the tenancy that claims its tags (None: no tenancy)."""
    if isinstance(stage, BuildTenancy):
        owner = stage.build_owner(client)
        if isinstance(owner, Deny):
            return owner
        if owner is not None:
            return owner, stage
    return "", None


_ROUTES: Final = {
    ControlSolve: Route("buildkit", "control_solve"),
    BridgeSolve: Route("buildkit", "bridge_solve"),
    ImageResolve: Route("buildkit", "resolve"),
    ContainerStart: Route("buildkit", "container"),
}


def call_request(call: Call, message: Message, client: ClientIdentity) -> ApiRequest | None:
    """The call as the policy sees it: a `buildkit.*` route, the decoded message as body."""
    route = _ROUTES.get(type(message))
    if route is None:
        return None
    path = call.method.path
    return ApiRequest("POST", path, path, None, route, {}, (), client, message)


def solve_request(session: str, attrs: dict[str, str], client: ClientIdentity) -> ApiRequest:
    """A Solve of the Dockerfile frontend as the `/build?version=2` request it amounts to
    (the Dockerfile's name and the build arguments), to decide its Dockerfile with."""
    args = {k.removeprefix("build-arg:"): v for k, v in attrs.items() if k.startswith("build-arg:")}
    query = {"version": ["2"], "session": [session], "buildargs": [json.dumps(args)]}
    if attrs.get("filename"):
        query["dockerfile"] = [attrs["filename"]]
    return ApiRequest("POST", "/build", "/build", None, Route("build", "build"), query, (), client)


_RULE_OF = re.compile(r"dockmoat: ([a-z0-9_.-]+):")


def audited(verdict: Verdict) -> tuple[str, str | None, int, tuple[str, ...]]:
    """A call's verdict as the audit log records a request: (decision, rule, an HTTP-like
    status, notes with the gRPC status of a refusal)."""
    if isinstance(verdict, Refuse):
        match = _RULE_OF.match(verdict.message)
        return "deny", match.group(1) if match else None, 403, (f"grpc-status {verdict.status}",)
    if isinstance(verdict, Replace | Answer):
        return "rewrite", None, 200, ()
    return "allow", None, 200, ()


def audit_request(call: Call, client: ClientIdentity) -> ApiRequest:
    """The call as the audit log names it: route `buildkit.<Service.Method>`."""
    path = call.method.path
    return ApiRequest(
        "POST", path, path, None, Route("buildkit", call.method.short), {}, (), client
    )


class BuildDecider:
    """Decides the calls of one upgraded connection (see the module docstring)."""

    def __init__(
        self,
        policy: Policy,
        client: ClientIdentity,
        builds: Builds,
        owner: str,
        tenancy: BuildTenancy | None,
        *,
        session: str = "",
        sources: SourceCheck | None = None,
    ) -> None:
        self.policy = policy
        self.client = client
        self.builds = builds
        self.owner = owner
        self.tenancy = tenancy
        self.session = session  # on /session: the session this connection serves
        self.sources = sources  # None: Dockerfiles are not read (nothing would check them)
        # The tags each Solve of this connection claimed (by its stream), until it ends.
        self.claims: dict[int, list[str]] = {}
        # The Solves of this connection that export to the image store, until they end.
        self.exporting: set[int] = set()

    # --- at the call's headers -------------------------------------------------------

    def admit(self, call: Call) -> Refuse | Answer | None:
        if call.tunnel == "session":
            # The daemon calling the client's own session (bound at /session); only the
            # Dockerfile of a /build?version=2 build is read (see `watch`).
            if call.method.path == FILESYNC_TARSTREAM and self._classic_build(call):
                return Refuse(
                    f"dockmoat: {BODY_RULE}: the Dockerfile of a /build?version=2 build is "
                    "read from FileSync.DiffCopy only"
                )
            return None
        service = call.method.service
        if self.tenancy is not None and service == CONTROL:
            if call.method.name == "DiskUsage":
                return Answer((b"",))  # the shared cache: none of it is the tenant's
            if call.method.name == "Prune":
                return Answer(())  # pruned nothing, as `/build/prune` for tenants
        if sum(1 for key, _value in call.metadata if key == BUILD_ID_METADATA) > 1:
            return Refuse(f"dockmoat: {BUILD_RULE}: a call naming more than one build id")
        if service == BRIDGE:
            build = call.header(BUILD_ID_METADATA)
            if not build:
                return Refuse(
                    f"dockmoat: {BUILD_RULE}: an LLBBridge call without a build id",
                    grpc.INVALID_ARGUMENT,
                )
            if not self.builds.claim_ref(build, self.owner):
                return _not_found(build)
        return None

    def filters(self, call: Call) -> bool:
        return self.tenancy is not None and call.method.path == (f"/{CONTROL}/ListenBuildHistory")

    def follows(self, call: Call) -> bool:
        return self.tenancy is not None and call.method.path == f"/{CONTROL}/Solve"

    async def ended(self, call: Call, ok: bool) -> None:
        """A Solve ended: if it exported to the image store, its image may be one no
        event announces (an older engine's BuildKit export), so tenancy drops what it
        keeps of the image listing (a Solve exporting elsewhere changed no image, and
        the listing stays), and learns which image each tag it built names (a custom
        frontend's image carries no tenant label: the tag is then its only tie to the
        job). If it failed, the tags its exporters claimed are released where no image
        carries them (a claim becomes real only with the image, as for a classic
        build's `-t`)."""
        exported = call.stream in self.exporting
        self.exporting.discard(call.stream)
        tags = self.claims.pop(call.stream, [])
        if self.tenancy is None:
            return
        if exported or (ok and tags):
            await self.tenancy.build_ended(self.client, tags if ok else [])
        if not ok and tags:
            await self.tenancy.release_build_tags(self.client, tags)

    def watch(self, call: Call) -> AnswerWatch | None:
        if call.method.path != FILESYNC_DIFFCOPY:
            return None
        request = self._classic_build(call)
        advisory = request is None
        if request is None:
            request = self._solve_build(call)
        if request is None:
            return None
        name = request.param("dockerfile") or DEFAULT_DOCKERFILE
        # The guard's own modification time: never the one of a copy the daemon keeps.
        return DockerfileWatch(self.session, name, secrets.randbits(62), advisory=advisory)

    def _fetches_dockerfile(self, call: Call) -> bool:
        return (
            self.sources is not None
            and bool(self.session)
            and [v for k, v in call.metadata if k == DIR_NAME] == [DOCKERFILE_DIR]
        )

    def _classic_build(self, call: Call) -> ApiRequest | None:
        """The /build?version=2 request whose Dockerfile this call fetches, if any."""
        return self.builds.classic.get(self.session) if self._fetches_dockerfile(call) else None

    def _solve_build(self, call: Call) -> ApiRequest | None:
        """The buildx Solve whose Dockerfile this call fetches, if it is the only one."""
        return self.builds.solves.get(self.session) if self._fetches_dockerfile(call) else None

    def answer(self, call: Call, payload: bytes) -> bytes | None:
        try:
            ref = messages.history_event_ref(payload)
        except WireError:
            return None  # fail closed: what cannot be read is not shown
        if not self.builds.owns_ref(ref, self.owner):
            return None
        self.builds.saw_blobs(messages.digests_in(payload), self.owner)
        return payload

    # --- on a message ------------------------------------------------------------------

    async def decide(self, call: Call, message: Message, payload: bytes) -> Verdict:
        try:
            return await self._decide(call, message, payload)
        except Exception:  # fail closed
            log.exception("BuildKit call %s could not be decided", call.method.path)
            return Refuse(
                f"dockmoat: policy.error: the BuildKit call {call.method.short} could not be "
                "evaluated. Nothing was forwarded; the error is in dockmoat's log"
            )

    async def _decide(self, call: Call, message: Message, payload: bytes) -> Verdict:
        if isinstance(message, DockerfileRead):
            return await self._dockerfile(message)
        if isinstance(message, ContentRead):
            if self.tenancy is not None and self.builds.blobs.get(message.digest) != self.owner:
                return Refuse(f"content digest {message.digest[:80]}: not found", grpc.NOT_FOUND)
            return PASS
        if isinstance(message, RefOnly):
            if message.ref and not self.builds.claim_ref(message.ref, self.owner):
                return _not_found(message.ref)
            return PASS
        request = call_request(call, message, self.client)
        if request is None:
            return PASS
        decision = self.policy.evaluate_build(request)
        if isinstance(decision, Deny):
            return Refuse(decision.message)
        if isinstance(message, ControlSolve):
            original = payload
            if isinstance(decision, Rewrite) and isinstance(decision.body_json, ControlSolve):
                payload = payload + decision.body_json.appended  # the guard's source policy
            return await self._control_solve(call, message, payload, original)
        if isinstance(message, BridgeSolve):
            refused = self._local_sessions(message)
            if refused is not None:
                return refused
            session = self.builds.build_sessions.get(call.header(BUILD_ID_METADATA) or "")
            if session:  # buildx runs the Dockerfile frontend through the bridge
                self._saw_dockerfile_build(session, message.frontend, message.frontend_opt)
            if self.tenancy is not None and message.frontend:
                return Replace(payload + string_map_field(3, f"label:{TENANT_LABEL}", self.owner))
            return PASS
        if (
            isinstance(message, ImageResolve)
            and message.session
            and not self.builds.claim_session(message.session, self.owner)
        ):
            return _session_refuse(message.session)
        return PASS

    async def _control_solve(
        self, call: Call, message: ControlSolve, payload: bytes, original: bytes = b""
    ) -> Verdict:
        if not message.ref or not self.builds.claim_ref(message.ref, self.owner):
            return Refuse(f"dockmoat: {BUILD_RULE}: the build id {message.ref[:80]!r} is taken")
        for session in (message.session, message.source_policy_session):
            if session and not self.builds.claim_session(session, self.owner):
                return _session_refuse(session)
        refused = self._local_sessions(message)
        if refused is not None:
            return refused
        if self.tenancy is None:
            self._saw_solve(message)
            return PASS if payload == original else Replace(payload)
        for exporter in message.exporters:
            if exporter.type not in IMAGE_EXPORTERS:
                continue
            for name in image_names(exporter.attrs):
                verdict = await self.tenancy.claim_build_tag(self.client, name)
                if isinstance(verdict, Deny):
                    return Refuse(verdict.message)
                self.claims.setdefault(call.stream, []).append(name)
        if any(exporter.type in IMAGE_EXPORTERS for exporter in message.exporters):
            self.exporting.add(call.stream)
        self._saw_solve(message)
        # The Dockerfile's FROM and COPY --from are resolved inside the daemon, in its
        # image store: other tenants' images are denied by the build's source policy.
        tags, image_ids = await self.tenancy.foreign_images(self.client)
        payload += tenancy_source_policy(tags, image_ids)
        return Replace(payload + string_map_field(7, f"label:{TENANT_LABEL}", self.owner))

    async def _dockerfile(self, message: DockerfileRead) -> Verdict:
        """A /build?version=2 build's Dockerfile, as its session sent it to the daemon:
        what it names is decided as a classic build's Dockerfile is."""
        request = self.builds.classic.get(message.session)
        if message.advisory:
            # A buildx build: its Solve's source policy holds whatever is read here; a
            # refusal here only says it first, with the rule.
            request = self.builds.solves.get(message.session)
            if request is None or self.sources is None or message.unreadable:
                return PASS
        if request is None or self.sources is None:
            return Refuse(f"dockmoat: {BODY_RULE}: a Dockerfile for no build of yours")
        try:
            found = session_dockerfile(
                message.name, message.text, build_args(request.param("buildargs"))
            )
        except BodyUnreadable as error:
            return PASS if message.advisory else Refuse(f"dockmoat: {BODY_RULE}: {error}")
        decision = await self.sources(request, found)
        if isinstance(decision, Deny):
            return Refuse(decision.message)
        return PASS

    def _saw_solve(self, message: ControlSolve) -> None:
        if message.session and message.ref:
            self.builds.build_session(message.ref, message.session)
        self._saw_dockerfile_build(message.session, message.frontend, message.frontend_attrs)

    def _saw_dockerfile_build(self, session: str, frontend: str, attrs: dict[str, str]) -> None:
        """A build of the Dockerfile frontend: its session's fetch of the Dockerfile is
        read too (for readable refusals)."""
        if self.sources is not None and session and frontend == "dockerfile.v0":
            self.builds.saw_solve(session, solve_request(session, attrs, self.client))

    def _local_sessions(self, message: ControlSolve | BridgeSolve) -> Refuse | None:
        for definition in message.definitions:
            for source in definition.sources:
                session = source.attrs.get("local.session", "")
                if (
                    source.identifier.startswith("local://")
                    and session
                    and not self.builds.claim_session(session, self.owner)
                ):
                    return _session_refuse(session)
        return None


class RefuseAll:
    """The decider of a tunnel the policy closed: every call gets the policy's refusal.

    Refusing `/grpc` with an HTTP 403 is not something clients can show: buildx then
    boots a docker-container builder (pulling moby/buildkit), the 20.10 CLI reads the
    answer as a bogus HTTP/2 greeting. Spoken as gRPC, the reason is printed."""

    def __init__(self, message: str) -> None:
        self.message = message

    def admit(self, call: Call) -> Refuse:
        return Refuse(self.message)

    def filters(self, call: Call) -> bool:
        return False

    def answer(self, call: Call, payload: bytes) -> bytes | None:
        return None

    def watch(self, call: Call) -> None:
        return None

    def follows(self, call: Call) -> bool:
        return False

    async def ended(self, call: Call, ok: bool) -> None:
        return None


def _not_found(ref: str) -> Refuse:
    return Refuse(f"no such job {ref[:80]}", grpc.NOT_FOUND)


def _session_refuse(session: str) -> Refuse:
    return Refuse(
        f"dockmoat: {SESSION_RULE}: the session {session[:80]} was not opened by you through "
        "this socket. A build uses the session its own client opened"
    )
