"""A /build?version=2 build's Dockerfile read from FileSync.DiffCopy: the watch alone,
then in the relay (held until decided), with a real h2 client and server, no engine."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.bodies import BuildSources
from dockmoat.api.request import ApiRequest
from dockmoat.buildkit import grpc, wire
from dockmoat.buildkit.decide import MAX_CLASSIC_PER_OWNER, BuildDecider, Builds
from dockmoat.buildkit.filesync import (
    ERR,
    MAX_DOCKERFILE,
    MAX_ERROR,
    MODE_DIR,
    DockerfileWatch,
    FileSyncRefused,
    error_packet,
    packet,
    stat,
)
from dockmoat.buildkit.messages import DockerfileRead
from dockmoat.policy.decision import Allow, Decision, Deny
from dockmoat.policy.engine import load_policy
from dockmoat.policy.trial import routed
from support.h2playbook import (
    CLIENT,
    Playbook,
    data_of,
    grpc_headers,
    playbook,
    status_of,
)

DIFFCOPY = "/moby.filesync.v1.FileSync/DiffCopy"
SYMLINK = 1 << 27
REGULAR = 0o644


def stat_packet(path: str, mode: int = REGULAR, linkname: str = "") -> bytes:
    body = wire.len_field(1, path.encode()) + wire.varint(2 << 3) + wire.varint(mode)
    if linkname:
        body += wire.len_field(7, linkname.encode())
    return wire.varint(1 << 3) + wire.varint(0) + wire.len_field(2, body)


END_OF_LISTING = wire.varint(1 << 3) + wire.varint(0)  # a STAT without a stat


def data_packet(ident: int, data: bytes) -> bytes:
    out = wire.varint(1 << 3) + wire.varint(2) + wire.varint(3 << 3) + wire.varint(ident)
    return out + (wire.len_field(4, data) if data else b"")


FIN = wire.varint(1 << 3) + wire.varint(3)


# --- the watch alone --------------------------------------------------------------------


def test_the_dockerfile_is_held_from_its_first_data_to_its_end_then_decided() -> None:
    watch = DockerfileWatch("s1", "Dockerfile", 12345)
    first = watch.feed(stat_packet("Dockerfile"))
    assert not first.hold and first.decide is None
    assert stat(packet(first.payload).stat or b"").path == "Dockerfile"
    assert first.payload != stat_packet("Dockerfile")  # the guard's own modTime
    assert not watch.feed(stat_packet("Dockerfile.dockerignore")).hold  # numbered 1
    assert not watch.feed(END_OF_LISTING).hold
    assert not watch.feed(data_packet(1, b"ignored\n")).hold  # another file: on its way
    assert watch.feed(data_packet(0, b"FROM a\n")).hold
    assert watch.feed(data_packet(1, b"more")).hold  # everything after it waits too
    done = watch.feed(data_packet(0, b""))
    assert done.hold and done.decide == DockerfileRead("s1", "Dockerfile", b"FROM a\n")
    with pytest.raises(FileSyncRefused, match="after its end"):
        watch.feed(data_packet(0, b"FROM b\n"))


def test_the_modification_time_is_merged_into_the_stat_as_go_reads_it() -> None:
    watch = DockerfileWatch("s1", "Dockerfile", 777)
    sent = packet(watch.feed(stat_packet("Dockerfile")).payload)
    times = [f.value for f in wire.fields(sent.stat or b"") if f.number == 6]
    assert times == [777]


@pytest.mark.parametrize(
    ("listing", "reason"),
    [
        ([stat_packet("Dockerfile", SYMLINK, "other")], "link or not a file"),
        ([stat_packet("Dockerfile", REGULAR, "hardlinked")], "link or not a file"),
        ([stat_packet("Dockerfile", MODE_DIR | 0o755)], "link or not a file"),
        ([stat_packet("Dockerfile"), stat_packet("Dockerfile")], "listed twice"),
        ([stat_packet("other"), END_OF_LISTING], "did not send the Dockerfile"),
        ([b"\xff"], "cannot read"),
    ],
)
def test_what_could_be_read_two_ways_ends_the_call(listing: list[bytes], reason: str) -> None:
    watch = DockerfileWatch("s1", "Dockerfile", 1)
    with pytest.raises(FileSyncRefused, match=reason):
        for raw in listing:
            watch.feed(raw)


def test_folders_on_the_dockerfiles_path_must_be_folders() -> None:
    watch = DockerfileWatch("s1", "sub/Dockerfile", 1)
    with pytest.raises(FileSyncRefused, match="not a folder"):
        watch.feed(stat_packet("sub", SYMLINK, "/etc"))
    fine = DockerfileWatch("s1", "sub/Dockerfile", 1)
    fine.feed(stat_packet("sub", MODE_DIR | 0o755))
    fine.feed(stat_packet("sub/Dockerfile"))
    fine.feed(END_OF_LISTING)
    assert fine.target == 1


def test_the_lower_case_fallback_is_followed_and_never_a_choice() -> None:
    # Newer frontends read `dockerfile` where `Dockerfile` is missing.
    watch = DockerfileWatch("s1", "Dockerfile", 1)
    watch.feed(stat_packet("a"))
    assert packet(watch.feed(stat_packet("dockerfile")).payload).stat != stat_packet("dockerfile")
    watch.feed(END_OF_LISTING)
    assert (watch.name, watch.target) == ("dockerfile", 1)
    both = DockerfileWatch("s1", "Dockerfile", 1)
    both.feed(stat_packet("Dockerfile"))
    both.feed(stat_packet("dockerfile"))
    with pytest.raises(FileSyncRefused, match="both"):
        both.feed(END_OF_LISTING)


def test_a_dockerfile_folder_beside_the_dockerfile_is_no_choice() -> None:
    watch = DockerfileWatch("s1", "Dockerfile", 1)
    watch.feed(stat_packet("Dockerfile"))
    watch.feed(stat_packet("dockerfile", MODE_DIR | 0o755))
    watch.feed(END_OF_LISTING)
    assert (watch.name, watch.target) == ("Dockerfile", 0)
    alone = DockerfileWatch("s1", "Dockerfile", 1)
    alone.feed(stat_packet("dockerfile", SYMLINK, "elsewhere"))
    with pytest.raises(FileSyncRefused, match="did not send"):
        alone.feed(END_OF_LISTING)


def test_an_advisory_watch_stops_where_a_strict_one_refuses() -> None:
    """A buildx Solve's Dockerfile (its source policy holds anyway): what cannot be
    followed lets everything go on, what is held included."""
    quiet = DockerfileWatch("s1", "Dockerfile", 1, advisory=True)
    assert not quiet.feed(stat_packet("Dockerfile", SYMLINK, "x")).hold
    assert not quiet.feed(data_packet(0, b"FROM a\n")).hold  # off for good
    held = DockerfileWatch("s1", "Dockerfile", 1, advisory=True)
    held.feed(stat_packet("Dockerfile"))
    held.feed(END_OF_LISTING)
    assert held.feed(data_packet(0, b"FROM a\n")).hold
    released = held.feed(b"\xff")  # unreadable while holding: decided as unreadable
    assert released.decide is not None and released.decide.unreadable
    assert released.decide.advisory
    assert not held.feed(data_packet(0, b"")).hold


@pytest.mark.parametrize("name", ["", "./Dockerfile", "../Dockerfile", "/Dockerfile", "a//b"])
def test_a_dockerfile_name_that_is_not_a_plain_path_is_refused(name: str) -> None:
    with pytest.raises(FileSyncRefused):
        DockerfileWatch("s1", name, 1)


def test_a_dockerfile_larger_than_the_bound_is_refused() -> None:
    watch = DockerfileWatch("s1", "Dockerfile", 1)
    watch.feed(stat_packet("Dockerfile"))
    watch.feed(END_OF_LISTING)
    with pytest.raises(FileSyncRefused, match="larger"):
        for _ in range(MAX_DOCKERFILE // 65536 + 2):
            watch.feed(data_packet(0, b"#" * 65536))


@given(st.lists(st.binary(max_size=64), max_size=12))
def test_any_packets_are_watched_or_refused(packets: list[bytes]) -> None:
    watch = DockerfileWatch("s1", "Dockerfile", 1)
    try:
        for raw in packets:
            watch.feed(raw)
    except FileSyncRefused:
        pass


# --- in the relay -----------------------------------------------------------------------


class Sources:
    """The gateway's check of what a Dockerfile names (pipeline.decide_build_sources)."""

    def __init__(self, verdict: Decision) -> None:
        self.verdict = verdict
        self.seen: list[tuple[str, tuple[str, ...]]] = []

    async def __call__(self, request: ApiRequest, found: BuildSources) -> Decision:
        self.seen.append((request.param("buildargs") or "", tuple(s.ref for s in found.sources)))
        return self.verdict


def session_book(sources: Sources, *, build: bool = True) -> Playbook:
    builds = Builds()
    if build:
        request = routed("POST", '/build?version=2&session=s1&buildargs={"B":"x"}', "test")
        assert builds.bind(request, "t1") is None
    decider = BuildDecider(
        load_policy("baseline", env={}), CLIENT, builds, "t1", None, session="s1", sources=sources
    )
    return playbook("session", decider=decider)


def fetch_dockerfile(book: Playbook) -> tuple[int, int]:
    """The daemon opens DiffCopy for `dir-name: dockerfile`: (daemon's, client's) stream."""
    stream = book.daemon.conn.get_next_available_stream_id()
    book.daemon.conn.send_headers(stream, [*grpc_headers(DIFFCOPY), ("dir-name", "dockerfile")])
    book.flush_daemon()
    opened = book.client.of(h2.events.RequestReceived)
    return stream, opened[-1].stream_id  # type: ignore[attr-defined]


def send(book: Playbook, client_id: int, *packets: bytes, end: bool = False) -> None:
    """The client (the files' sender) answers on its stream."""
    for raw in packets:
        book.client.conn.send_data(client_id, grpc.frame(raw))
    if end:
        book.client.conn.send_headers(client_id, [("grpc-status", "0")], end_stream=True)
    book.flush_client()


def respond(book: Playbook, client_id: int) -> None:
    book.client.conn.send_headers(
        client_id, [(":status", "200"), ("content-type", "application/grpc")]
    )
    book.flush_client()


def test_the_daemon_gets_the_dockerfile_only_once_it_was_decided() -> None:
    sources = Sources(Allow())
    book = session_book(sources)
    stream, client_id = fetch_dockerfile(book)
    respond(book, client_id)
    send(book, client_id, stat_packet("Dockerfile"), END_OF_LISTING)
    listed = data_of(book.daemon, stream)
    assert listed  # the listing goes on: the daemon must ask for the file
    send(book, client_id, data_packet(0, b"ARG B\nFROM $B\n"))
    assert data_of(book.daemon, stream) == listed  # held
    send(book, client_id, data_packet(0, b""), FIN, end=True)
    assert sources.seen == [('{"B":"x"}', ("x",))]  # read with the build's own arguments
    assert data_of(book.daemon, stream).endswith(grpc.frame(FIN))
    assert status_of(book.daemon, stream) == ("0", "")


def test_a_refused_dockerfile_never_reaches_the_daemon() -> None:
    sources = Sources(Deny("tenancy.x", "No such image: theirs"))
    book = session_book(sources)
    stream, client_id = fetch_dockerfile(book)
    respond(book, client_id)
    send(book, client_id, stat_packet("Dockerfile"), END_OF_LISTING)
    listed = data_of(book.daemon, stream)
    send(book, client_id, data_packet(0, b"FROM theirs\n"), data_packet(0, b""), FIN, end=True)
    # None of the Dockerfile: the guard's own error packet in its place (fsutil's
    # receiver ends with "error from sender: <reason>"), then the gRPC error.
    assert data_of(book.daemon, stream) == listed + grpc.frame(
        error_packet("No such image: theirs")
    )
    assert status_of(book.daemon, stream) == (str(grpc.PERMISSION_DENIED), "No such image: theirs")
    cancelled = book.client.of(h2.events.StreamReset, client_id)
    assert cancelled


def test_the_daemon_hears_a_refusal_as_a_senders_error_before_the_grpc_error() -> None:
    """The 20.10 CLI printed "failed to read dockerfile: context canceled" for some
    refused builds: dockerd's receiver given the gRPC error alone can report its own
    cancellation instead. A sender's ERR packet it reports as it is."""
    book = session_book(Sources(Deny("images.registry-address", "dockmoat: images. no")))
    stream, client_id = fetch_dockerfile(book)
    respond(book, client_id)
    send(book, client_id, stat_packet("Dockerfile"), END_OF_LISTING)
    listed = data_of(book.daemon, stream)
    send(book, client_id, data_packet(0, b"FROM 127.0.0.1:5000/x\n"), data_packet(0, b""))
    after = data_of(book.daemon, stream)[len(listed) :]
    reader = grpc.MessageReader()
    (last,) = reader.feed(after)
    err = packet(last)
    assert (err.type, err.data, err.stat) == (ERR, b"dockmoat: images. no", None)
    assert b"127.0.0.1:5000" not in after
    assert status_of(book.daemon, stream)[0] == str(grpc.PERMISSION_DENIED)


def test_an_error_packet_is_bounded() -> None:
    raw = error_packet("x" * (MAX_ERROR * 2))
    assert packet(raw).data == b"x" * MAX_ERROR


def test_a_dockerfile_that_is_not_read_is_refused_with_the_reason() -> None:
    book = session_book(Sources(Allow()))
    stream, client_id = fetch_dockerfile(book)
    respond(book, client_id)
    send(book, client_id, stat_packet("Dockerfile"), END_OF_LISTING)
    text = b"# syntax=registry.example/frontend:1\nFROM a\n"
    send(book, client_id, data_packet(0, text), data_packet(0, b""), end=True)
    status, message = status_of(book.daemon, stream)
    assert status == str(grpc.PERMISSION_DENIED)
    assert "custom frontend" in message and "api.unreadable-body" in message


def test_sessions_without_a_classic_build_are_not_watched() -> None:
    book = session_book(Sources(Deny("x", "never asked")), build=False)
    stream, client_id = fetch_dockerfile(book)
    respond(book, client_id)
    send(book, client_id, stat_packet("Dockerfile"), END_OF_LISTING, data_packet(0, b"x"))
    assert data_of(book.daemon, stream).endswith(grpc.frame(data_packet(0, b"x")))


def test_one_classic_build_a_session() -> None:
    builds = Builds()
    first = routed("POST", "/build?version=2&session=s1", "test")
    assert builds.bind(first, "t1") is None
    again = builds.bind(routed("POST", "/build?version=2&session=s1", "test"), "t1")
    assert again is not None and "one build a session" in again.message


def test_tarstream_is_refused_for_a_classic_builds_dockerfile() -> None:
    book = session_book(Sources(Allow()))
    stream = book.daemon.conn.get_next_available_stream_id()
    path = "/moby.filesync.v1.FileSync/TarStream"
    book.daemon.conn.send_headers(stream, [*grpc_headers(path), ("dir-name", "dockerfile")])
    book.flush_daemon()
    assert status_of(book.daemon, stream)[0] == str(grpc.PERMISSION_DENIED)
    assert not book.client.of(h2.events.RequestReceived)  # never reached the client


def test_a_classic_build_is_forgotten_only_with_its_sessions_last_connection() -> None:
    builds = Builds()
    assert builds.bind(routed("POST", "/build?version=2&session=s1", "test"), "t1") is None
    builds.session_opened("s1")
    builds.session_opened("s1")
    builds.session_ended("s1")
    assert "s1" in builds.classic  # the daemon may still fetch over the other one
    builds.session_ended("s1")
    assert "s1" not in builds.classic


def test_classic_builds_in_flight_are_bounded_never_evicted() -> None:
    builds = Builds()
    for n in range(MAX_CLASSIC_PER_OWNER):
        request = routed("POST", f"/build?version=2&session=s{n}", "test")
        assert builds.bind(request, "t1") is None
    refused = builds.bind(routed("POST", "/build?version=2&session=more", "test"), "t1")
    assert refused is not None and refused.status == 429
    assert "s0" in builds.classic
    # another owner is not held up by this one
    assert builds.bind(routed("POST", "/build?version=2&session=x", "test"), "t2") is None


def test_packet_fields_are_truncated_as_go_reads_them() -> None:
    """Enum and uint32 fields keep their low 32 bits in Go: a DATA type or an id with
    high bits set is still DATA for that file to the daemon, so it is held here too."""
    watch = DockerfileWatch("s1", "Dockerfile", 1)
    watch.feed(stat_packet("Dockerfile"))
    watch.feed(END_OF_LISTING)
    sneaky = (
        wire.varint(1 << 3) + wire.varint(2 | 1 << 32)
        + wire.varint(3 << 3) + wire.varint(1 << 32)
        + wire.len_field(4, b"FROM theirs\n")
    )  # fmt: skip
    assert packet(sneaky).type == 2 and packet(sneaky).id == 0
    assert watch.feed(sneaky).hold


def test_a_build_whose_session_never_connected_frees_its_slot_late() -> None:
    now = [0.0]
    builds = Builds(clock=lambda: now[0])
    for n in range(MAX_CLASSIC_PER_OWNER):
        assert builds.bind(routed("POST", f"/build?version=2&session=s{n}", "test"), "t1") is None
    builds.session_opened("s0")  # connected: kept whatever its age
    now[0] = 599.0
    assert builds.bind(routed("POST", "/build?version=2&session=x", "t"), "t1") is not None
    now[0] = 601.0
    assert builds.bind(routed("POST", "/build?version=2&session=x", "t"), "t1") is None
    assert "s0" in builds.classic and "s1" not in builds.classic
