"""Build rules and tenancy on decoded BuildKit calls (bytes as buildx sends them)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from dockmoat.api.request import ClientIdentity
from dockmoat.buildkit import grpc, messages, services
from dockmoat.buildkit.decide import TENANT_LABEL, BuildDecider, Builds
from dockmoat.buildkit.relay import Answer, Call, Pass, Refuse, Replace, Verdict
from dockmoat.buildkit.wire import as_bytes, fields, len_field, string_map_field, varint
from dockmoat.policy.decision import Allow, Decision, Deny
from dockmoat.policy.engine import load_policy
from dockmoat.policy.rules.build import (
    INTERNAL_SOURCE,
    qualified,
    source_policy,
    tenancy_source_policy,
)

CLIENT = ClientIdentity(listener="test")


def grpc_call(path: str, metadata: tuple[tuple[str, str], ...] = ()) -> Call:
    method = services.lookup("grpc", path)
    assert method is not None
    return Call("grpc", method, metadata)


SOLVE = grpc_call("/moby.buildkit.v1.Control/Solve")


def exec_op(
    network: int = 0,
    security: int = 0,
    cgroup: str = "",
    ulimit: tuple[str, int, int] | None = None,
) -> bytes:
    meta = len_field(1, b"sh") + (len_field(10, cgroup.encode()) if cgroup else b"")
    if ulimit is not None:
        name, soft, hard = ulimit  # pb.Ulimit: Name 1, Soft 2, Hard 3 (int64)
        entry = len_field(1, name.encode())
        entry += (
            varint(2 << 3) + varint(soft % (1 << 64)) + varint(3 << 3) + varint(hard % (1 << 64))
        )
        meta += len_field(9, entry)
    body = len_field(1, meta)
    if network:
        body += varint(3 << 3) + varint(network)
    if security:
        body += varint(4 << 3) + varint(security)
    return len_field(2, body)  # Op.exec


def source_op(identifier: str, **attrs: str) -> bytes:
    body = len_field(1, identifier.encode())
    body += b"".join(string_map_field(2, k, v) for k, v in attrs.items())
    return len_field(3, body)  # Op.source


def definition(*ops: bytes) -> bytes:
    return b"".join(len_field(1, op) for op in ops)


def solve(*extra: bytes, ref: str = "ref1", session: str = "sess1") -> bytes:
    return len_field(1, ref.encode()) + len_field(5, session.encode()) + b"".join(extra)


def exporter(kind: str, **attrs: str) -> bytes:
    body = len_field(1, kind.encode()) + b"".join(
        string_map_field(2, k, v) for k, v in attrs.items()
    )
    return len_field(13, body)


class Tags:
    """A tenancy whose tags are free except `shared:1`."""

    def __init__(self, owner: str = "t1") -> None:
        self.owner = owner
        self.claimed: list[str] = []
        self.released: list[str] = []
        self.built: list[str] = []
        self.ended = 0  # Solves ended (each may have made an image)

    def build_owner(self, client: ClientIdentity) -> str | Deny | None:
        return self.owner

    async def claim_build_tag(self, client: ClientIdentity, tag: str) -> Decision:
        if tag == "shared:1":
            return Deny("tenancy.image-tag", "dockmoat: tenancy.image-tag: the tag shared:1 ...")
        self.claimed.append(tag)
        return Allow()

    async def release_build_tags(self, client: ClientIdentity, tags: list[str]) -> None:
        self.released.extend(tags)

    async def foreign_images(self, client: ClientIdentity) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset({"theirs:1"}), frozenset()

    async def build_ended(self, client: ClientIdentity, built: list[str]) -> None:
        self.ended += 1
        self.built.extend(built)


def decide(payload: bytes, *, call: Call = SOLVE, decider: BuildDecider | None = None) -> Verdict:
    decider = decider or BuildDecider(load_policy(env={}), CLIENT, Builds(), "", None)
    message = call.method.decode(payload)
    return asyncio.run(decider.decide(call, message, payload))


def forwarded(verdict: Verdict, payload: bytes) -> bytes:
    """The payload an allowed Solve goes on with: the client's, then the guard's additions."""
    assert isinstance(verdict, Replace), verdict
    assert verdict.payload.startswith(payload)
    return verdict.payload[len(payload) :]


def refused_by(verdict: Verdict) -> str:
    assert isinstance(verdict, Refuse), verdict
    return verdict.message.split(":")[1].strip()


# --- policy -----------------------------------------------------------------------------


def test_a_plain_dockerfile_build_passes_with_the_guards_source_policy() -> None:
    payload = solve(len_field(6, b""), string_map_field(7, "filename", "Dockerfile"))
    added = forwarded(decide(payload), payload)
    assert added == source_policy(load_policy(env={}).settings)
    # SourcePolicy (12) { version 1, rules [DENY regex internal hosts] }
    policy = [f for f in fields(added)]
    assert [f.number for f in policy] == [12]
    rules = [f for f in fields(as_bytes(policy[0])) if f.number == 2]
    assert len(rules) == 1
    assert INTERNAL_SOURCE.encode() in as_bytes(rules[0])


@pytest.mark.parametrize(
    ("identifier", "denied"),
    [
        ("docker-image://docker.io/library/alpine:3", False),
        ("docker-image://ghcr.io/a/b@sha256:" + "a" * 64, False),
        ("https://github.com/moby/buildkit.git", False),
        ("git://github.com/moby/buildkit.git#v0.13", False),
        ("https://1.2.3.4/x", False),
        ("docker-image://127.0.0.1:5000/x:latest", True),
        ("docker-image://registry.internal/a/b", True),
        ("docker-image://myregistry:5000/x", True),
        ("docker-image://[::1]:5000/x", True),
        ("https://169.254.169.254/latest/meta-data", True),
        ("http://user:pw@localhost:8080/x", True),
        ("git://10.1.2.3/repo.git", True),
        ("https://2130706433/x", True),
        ("https://0x7f.1/x", True),
        ("docker-image://172.20.0.1/x", True),
        ("docker-image://100.64.0.1/x", True),
    ],
)
def test_the_source_policy_denies_internal_hosts(identifier: str, denied: bool) -> None:
    # Python's re and Go's RE2 agree on this pattern (no look-around, no back-references)
    assert bool(re.match(INTERNAL_SOURCE, identifier)) is denied


@pytest.mark.parametrize(
    ("tag", "full"),
    [
        ("app:1", "docker.io/library/app:1"),
        ("me/app:1", "docker.io/me/app:1"),
        ("localhost/app:1", "localhost/app:1"),
        ("reg.io/a/b:2", "reg.io/a/b:2"),
        ("reg:5000/b:2", "reg:5000/b:2"),
    ],
)
def test_familiar_names_are_qualified_as_buildkit_spells_sources(tag: str, full: str) -> None:
    assert qualified(tag) == full


def test_the_tenancy_source_policy_denies_other_tenants_tags_and_ids() -> None:
    image_id = "sha256:" + "c" * 64
    added = tenancy_source_policy({"their/app:1", "db:2"}, {image_id})
    (policy,) = list(fields(added))
    assert policy.number == 12
    rules = [as_bytes(f) for f in fields(as_bytes(policy)) if f.number == 2]
    selectors = [as_bytes(f) for r in rules for f in fields(r) if f.number == 2]
    patterns = [as_bytes(f).decode() for s in selectors for f in fields(s) if f.number == 1]
    assert len(patterns) == 3
    compiled = [re.compile(p) for p in patterns]  # RE2 and Python agree on these
    denied = [
        "docker-image://docker.io/their/app:1",
        "docker-image://docker.io/their/app:1@sha256:" + "a" * 64,
        "docker-image://docker.io/library/db:2",
        "docker-image://docker.io/library/busybox:1@" + image_id,
    ]
    allowed = ["docker-image://docker.io/their/app:10", "docker-image://docker.io/library/db:2x"]
    for identifier in denied:
        assert any(r.match(identifier) for r in compiled), identifier
    for identifier in allowed:
        assert not any(r.match(identifier) for r in compiled), identifier
    assert tenancy_source_policy((), ()) == b""


def test_allowlisted_registries_and_urls_are_allowed_again(tmp_path: Path) -> None:
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        "registries: ['registry.internal:5000']\nfetch_targets: ['https://git.internal/']\n"
    )
    added = source_policy(load_policy(policy_file=policy_file, env={}).settings)
    assert b"^docker-image://registry\\.internal:5000/" in added
    assert b"^https://git\\.internal/" in added


@pytest.mark.parametrize(
    ("extra", "rule"),
    [
        (len_field(9, b"network.host"), "build.network-host"),
        (string_map_field(7, "force-network-mode", "host"), "build.network-host"),
        (len_field(2, definition(exec_op(network=1))), "build.network-host"),
        (len_field(9, b"security.insecure"), "build.insecure"),
        (len_field(2, definition(exec_op(security=1))), "build.insecure"),
        (len_field(9, b"device=nvidia.com/gpu=all"), "build.devices"),
        (len_field(9, b"made.up"), "build.devices"),
        (string_map_field(7, "cgroup-parent", "/"), "build.cgroup-parent"),
        (len_field(2, definition(exec_op(cgroup="/system.slice"))), "build.cgroup-parent"),
        (
            len_field(2, definition(source_op("docker-image://127.0.0.1:5000/x:1"))),
            "build.sources",
        ),
        (len_field(2, definition(source_op("https://169.254.169.254/x"))), "build.sources"),
        (len_field(2, definition(source_op("git://10.0.0.5/repo.git"))), "build.sources"),
        (len_field(2, definition(source_op("s3://bucket/x"))), "build.sources"),
        (string_map_field(7, "context", "http://localhost:8080/ctx.tar"), "build.sources"),
        (
            string_map_field(7, "context:base", "docker-image://registry.internal/b"),
            "build.sources",
        ),
        (string_map_field(7, "build-arg:BUILDKIT_SYNTAX", "10.1.1.1/fe"), "build.sources"),
        (len_field(6, b"some.other.frontend"), "build.sources"),
        (
            len_field(
                8,
                len_field(
                    5,
                    len_field(1, b"registry")
                    + string_map_field(2, "ref", "192.168.1.9:5000/cache"),
                ),
            ),
            "build.sources",
        ),
        (exporter("image", name="127.0.0.1:5000/x", push="true"), "build.exporters"),
        (exporter("containerd"), "build.exporters"),
        # An enum is its low 32 bits to Go: `1 | 1 << 32` is the host network there.
        (len_field(2, definition(exec_op(network=1 | 1 << 32))), "build.network-host"),
        (len_field(2, definition(exec_op(security=1 | 1 << 32))), "build.insecure"),
        (
            len_field(2, definition(exec_op(ulimit=("nofile", 1 << 21, 1 << 21)))),
            "build.cgroup-parent",
        ),
        (len_field(2, definition(exec_op(ulimit=("rtprio", 1, 1)))), "build.cgroup-parent"),
        (len_field(2, definition(exec_op(ulimit=("nofile", -1, -1)))), "build.cgroup-parent"),
        (string_map_field(7, "ulimit", "nofile=4096:2000000"), "build.cgroup-parent"),
        (string_map_field(7, "ulimit", "nice=1"), "build.cgroup-parent"),
        (string_map_field(7, "ulimit", "nofile"), "build.cgroup-parent"),
    ],
)
def test_refusals_name_their_rule(extra: bytes, rule: str) -> None:
    assert refused_by(decide(solve(extra))) == rule


@pytest.mark.parametrize(
    "extra",
    [
        len_field(2, definition(source_op("docker-image://docker.io/library/alpine:3"))),
        len_field(2, definition(source_op("https://github.com/moby/buildkit.git"))),
        len_field(2, definition(exec_op(network=2))),  # network none
        len_field(2, definition(exec_op(ulimit=("nofile", 1024, 4096)))),
        string_map_field(7, "ulimit", "nofile=1024:4096,nproc=512"),
        exporter("moby", name="app:1"),
        exporter("local"),
        exporter("tar"),
        exporter("image", name="ghcr.io/acme/app:1", push="true"),
        string_map_field(7, "add-hosts", "db=10.0.0.2"),
    ],
)
def test_what_builds_need_passes(extra: bytes) -> None:
    payload = solve(extra)
    assert forwarded(decide(payload), payload) == source_policy(load_policy(env={}).settings)


def test_permissive_reads_but_lets_through() -> None:
    decider = BuildDecider(load_policy("permissive", env={}), CLIENT, Builds(), "", None)
    assert isinstance(decide(solve(len_field(9, b"network.host")), decider=decider), Pass)
    # and no source policy is added there
    assert isinstance(decide(solve(), decider=decider), Pass)


def test_the_frontend_solve_and_build_containers_are_read_too() -> None:
    bridge = grpc_call(
        "/moby.buildkit.v1.frontend.LLBBridge/Solve", (("buildkit-controlapi-buildid", "r"),)
    )
    host = len_field(1, definition(exec_op(network=1)))
    assert refused_by(decide(host, call=bridge)) == "build.network-host"
    container = grpc_call("/moby.buildkit.v1.frontend.LLBBridge/NewContainer")
    assert refused_by(decide(varint(3 << 3) + varint(1), call=container)) == "build.network-host"
    process = grpc_call("/moby.buildkit.v1.frontend.LLBBridge/ExecProcess")
    init = len_field(2, varint(5 << 3) + varint(1))
    assert refused_by(decide(init, call=process)) == "build.insecure"
    resolve = grpc_call("/moby.buildkit.v1.frontend.LLBBridge/ResolveImageConfig")
    assert refused_by(decide(len_field(1, b"[::1]:5000/x"), call=resolve)) == "build.sources"


# --- tenancy ------------------------------------------------------------------------------


def tenant(builds: Builds, name: str) -> tuple[BuildDecider, Tags]:
    tags = Tags(name)
    return BuildDecider(load_policy(env={}), CLIENT, builds, name, tags), tags


def test_a_tenant_solve_claims_tags_labels_the_image_and_binds_ids() -> None:
    builds = Builds()
    one, tags = tenant(builds, "t1")
    payload = solve(exporter("moby", name="app:1,app:2"))
    verdict = decide(payload, decider=one)
    assert isinstance(verdict, Replace)
    assert tags.claimed == ["app:1", "app:2"]
    assert messages.control_solve(verdict.payload).frontend_attrs == {f"label:{TENANT_LABEL}": "t1"}
    assert builds.refs["ref1"] == "t1"
    assert builds.sessions["sess1"] == "t1"


def test_a_failed_solve_releases_the_tags_it_claimed_and_a_finished_one_records_them() -> None:
    one, tags = tenant(Builds(), "t1")
    first = dataclasses.replace(SOLVE, stream=1)
    second = dataclasses.replace(SOLVE, stream=3)
    decide(solve(exporter("moby", name="app:1")), call=first, decider=one)
    decide(solve(exporter("moby", name="app:2"), ref="ref2"), call=second, decider=one)
    asyncio.run(one.ended(second, ok=False))
    asyncio.run(one.ended(first, ok=True))
    assert tags.claimed == ["app:1", "app:2"]
    assert tags.released == ["app:2"]
    assert tags.ended == 2  # each may have exported an image no engine event announces
    assert tags.built == ["app:1"]  # the finished one's tag: the job's image by its record
    local = dataclasses.replace(SOLVE, stream=5)
    decide(solve(exporter("local"), ref="ref3"), call=local, decider=one)
    asyncio.run(one.ended(local, ok=True))
    assert tags.ended == 2  # an export to the client changed no image
    assert one.follows(SOLVE) and not one.follows(grpc_call("/moby.buildkit.v1.Control/Status"))


def test_a_shared_tag_is_refused_as_docker_build_t_is() -> None:
    one, _tags = tenant(Builds(), "t1")
    assert refused_by(decide(solve(exporter("moby", name="shared:1")), decider=one)) == (
        "tenancy.image-tag"
    )


def test_another_tenants_session_build_status_and_history_are_not_theirs() -> None:
    builds = Builds()
    one, _ = tenant(builds, "t1")
    two, _ = tenant(builds, "t2")
    assert isinstance(decide(solve(), decider=one), Replace)
    # the same session in another tenant's build
    other = decide(solve(ref="ref2", session="sess1"), decider=two)
    assert refused_by(other) == "tenancy.build-session"
    # a local source from another tenant's session
    local = len_field(2, definition(source_op("local://context", **{"local.session": "sess1"})))
    assert refused_by(decide(solve(local, ref="ref3", session="s2"), decider=two)) == (
        "tenancy.build-session"
    )
    # Status of another tenant's build: not found
    status = grpc_call("/moby.buildkit.v1.Control/Status")
    verdict = decide(len_field(1, b"ref1"), call=status, decider=two)
    assert isinstance(verdict, Refuse) and verdict.status == grpc.NOT_FOUND
    assert isinstance(decide(len_field(1, b"ref1"), call=status, decider=one), Pass)
    # LLBBridge calls carry the build id in their metadata
    bridge = grpc_call(
        "/moby.buildkit.v1.frontend.LLBBridge/ReadFile", (("buildkit-controlapi-buildid", "ref1"),)
    )
    admitted = two.admit(bridge)
    assert isinstance(admitted, Refuse) and admitted.status == grpc.NOT_FOUND
    assert one.admit(bridge) is None
    both = grpc_call(
        "/moby.buildkit.v1.frontend.LLBBridge/ReadFile",
        (("buildkit-controlapi-buildid", "ref1"), ("buildkit-controlapi-buildid", "other")),
    )
    assert isinstance(one.admit(both), Refuse)
    # history: another tenant's records are dropped from the answer
    history = grpc_call("/moby.buildkit.v1.Control/ListenBuildHistory")
    event = len_field(2, len_field(1, b"ref1") + len_field(8, b"sha256:" + b"a" * 64))
    assert two.filters(history) and two.answer(history, event) is None
    assert one.answer(history, event) == event
    # and its blobs are readable only by the tenant that saw them
    read = grpc_call("/containerd.services.content.v1.Content/Read")
    digest = len_field(1, b"sha256:" + b"a" * 64)
    assert isinstance(decide(digest, call=read, decider=one), Pass)
    assert isinstance(decide(digest, call=read, decider=two), Refuse)


def test_a_tenant_sees_no_shared_cache_and_prunes_nothing() -> None:
    one, _ = tenant(Builds(), "t1")
    assert one.admit(grpc_call("/moby.buildkit.v1.Control/DiskUsage")) == Answer((b"",))
    assert one.admit(grpc_call("/moby.buildkit.v1.Control/Prune")) == Answer(())
    untenanted = BuildDecider(load_policy(env={}), CLIENT, Builds(), "", None)
    assert untenanted.admit(grpc_call("/moby.buildkit.v1.Control/Prune")) is None


def test_the_http_side_binds_sessions() -> None:
    from dockmoat.policy.trial import routed

    builds = Builds()
    opened = routed("POST", "/session", listener="x")._replace(
        headers=(("X-Docker-Expose-Session-Uuid", "abc"),)
    )
    assert builds.bind(opened, "t1") is None
    assert isinstance(builds.bind(opened, "t2"), Deny)
    assert builds.bind(routed("POST", "/build?version=2&session=abc", listener="x"), "t1") is None
    stolen = builds.bind(routed("POST", "/build?version=2&session=abc", listener="x"), "t2")
    assert isinstance(stolen, Deny) and stolen.rule == "tenancy.build-session"


def test_restricted_closes_buildkit_with_reasons_clients_print() -> None:
    from dockmoat.buildkit.decide import RefuseAll
    from dockmoat.policy.trial import routed

    restricted = load_policy("restricted", env={})
    for target in ("/grpc", "/session", "/v1.41/build?version=2&session=x"):
        decision = restricted.evaluate(routed("POST", target, listener="x"))
        assert isinstance(decision, Deny) and decision.rule == "system.session", target
    assert isinstance(restricted.evaluate(routed("POST", "/v1.41/build", listener="x")), Allow)
    # the refused tunnel is answered in gRPC: every call gets the rule's message
    refuse = RefuseAll("dockmoat: system.session: ...")
    verdict = refuse.admit(grpc_call("/moby.buildkit.v1.Control/ListWorkers"))
    assert verdict.status == grpc.PERMISSION_DENIED
    assert "system.session" in verdict.message
