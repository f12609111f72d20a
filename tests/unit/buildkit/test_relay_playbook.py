"""Playbooks of the BuildKit HTTP/2 relay: a real h2 client and server on each side,
bytes in, commands out, no sockets and no engine."""

from __future__ import annotations

from pathlib import Path

import h2.connection
import h2.events
import pytest

from dockmoat.buildkit import grpc
from dockmoat.buildkit.decide import BuildDecider, Builds
from dockmoat.buildkit.relay import Ended, Relay, SendClient, SendUpstream, Watched
from dockmoat.buildkit.services import Tunnel
from dockmoat.buildkit.wire import len_field, string_map_field
from dockmoat.policy.engine import load_policy
from dockmoat.policy.rules.build import source_policy
from support.h2playbook import (
    CLIENT,
    INFO,
    SOLVE,
    Playbook,
    answer,
    call,
    data_of,
    grpc_headers,
    playbook,
    status_of,
)


def solve(*extra: bytes, ref: str = "ref1", session: str = "sess1") -> bytes:
    return len_field(1, ref.encode()) + len_field(5, session.encode()) + b"".join(extra)


# --- playbooks ------------------------------------------------------------------------


def test_an_allowed_call_is_relayed_both_ways() -> None:
    book = playbook()
    stream = call(book, INFO, b"")
    daemon_streams = book.daemon.of(h2.events.RequestReceived)
    assert len(daemon_streams) == 1
    daemon_id = daemon_streams[0].stream_id  # type: ignore[attr-defined]
    answer(book, daemon_id, b"\x0a\x03abc")
    assert data_of(book.client, stream) == grpc.frame(b"\x0a\x03abc")
    assert status_of(book.client, stream) == ("0", "")
    assert not book.closed


def test_an_unknown_method_is_refused_and_never_reaches_the_daemon() -> None:
    book = playbook()
    stream = call(book, "/moby.buildkit.v1.Control/Session", b"")
    status, message = status_of(book.client, stream)
    assert status == str(grpc.PERMISSION_DENIED)
    assert "build.grpc-method" in message
    assert "Control" in message
    assert not book.daemon.of(h2.events.RequestReceived)


def test_a_refused_solve_names_the_rule_and_the_connection_stays_usable() -> None:
    book = playbook()
    stream = call(book, SOLVE, solve(len_field(9, b"network.host")))
    status, message = status_of(book.client, stream)
    assert status == str(grpc.PERMISSION_DENIED)
    assert "build.network-host" in message
    # the daemon got the call's headers, then a reset, never the message
    daemon_id = book.daemon.of(h2.events.RequestReceived)[0].stream_id  # type: ignore[attr-defined]
    assert data_of(book.daemon, daemon_id) == b""
    assert book.daemon.of(h2.events.StreamReset, daemon_id)
    # another call on the same connection goes through
    second = call(book, INFO, b"")
    other = book.daemon.of(h2.events.RequestReceived)[-1].stream_id  # type: ignore[attr-defined]
    answer(book, other, b"")
    assert status_of(book.client, second) == ("0", "")
    assert not book.closed


def test_an_allowed_solve_reaches_the_daemon_whole() -> None:
    book = playbook()
    message = solve(string_map_field(7, "filename", "Dockerfile"))
    call(book, SOLVE, message)
    daemon_id = book.daemon.of(h2.events.RequestReceived)[0].stream_id  # type: ignore[attr-defined]
    # the guard's source policy (build.sources) is appended; nothing else changes
    added = source_policy(load_policy(env={}).settings)
    assert data_of(book.daemon, daemon_id) == grpc.frame(message + added)
    assert book.daemon.of(h2.events.StreamEnded, daemon_id)


def test_insecure_and_internal_sources_are_refused() -> None:
    book = playbook()
    first = call(book, SOLVE, solve(len_field(9, b"security.insecure"), ref="r2", session="s2"))
    assert "build.insecure" in status_of(book.client, first)[1]
    internal = string_map_field(7, "context", "http://169.254.169.254/latest/meta-data")
    second = call(book, SOLVE, solve(internal, ref="r3", session="s3"))
    assert "build.sources" in status_of(book.client, second)[1]


def test_a_compressed_message_is_refused() -> None:
    book = playbook()
    peer = book.client.conn
    stream = peer.get_next_available_stream_id()
    peer.send_headers(stream, grpc_headers(INFO))
    peer.send_data(stream, b"\x01\x00\x00\x00\x01x", end_stream=True)
    book.flush_client()
    assert status_of(book.client, stream)[0] == str(grpc.UNIMPLEMENTED)


def test_a_message_larger_than_the_limit_is_refused_before_it_is_read() -> None:
    book = playbook()
    peer = book.client.conn
    stream = peer.get_next_available_stream_id()
    peer.send_headers(stream, grpc_headers(INFO))
    peer.send_data(stream, b"\x00" + (grpc.MAX_MESSAGE + 1).to_bytes(4, "big"))
    book.flush_client()
    assert status_of(book.client, stream)[0] == str(grpc.RESOURCE_EXHAUSTED)


def test_a_large_message_crosses_flow_control_whole() -> None:
    book = playbook()
    big = len_field(1, b"r") + len_field(6, b"x" * 3_000_000)  # frontend name field, 3 MB
    peer = book.client.conn
    stream = peer.get_next_available_stream_id()
    peer.send_headers(stream, grpc_headers(INFO))
    data = grpc.frame(big)
    sent = 0
    for _ in range(10_000):
        if sent == len(data):
            break
        window = min(peer.local_flow_control_window(stream), peer.max_outbound_frame_size)
        if window:
            peer.send_data(stream, data[sent : sent + window])
            sent += window
        book.flush_client()
        book.flush_daemon()
    peer.end_stream(stream)
    book.flush_client()
    daemon = book.daemon
    daemon_id = daemon.of(h2.events.RequestReceived)[0].stream_id  # type: ignore[attr-defined]
    for _ in range(10_000):
        got = data_of(daemon, daemon_id)
        if len(got) == len(data):
            break
        for event in daemon.of(h2.events.DataReceived, daemon_id):
            size = event.flow_controlled_length or 0  # type: ignore[attr-defined]
            if size:
                daemon.conn.acknowledge_received_data(size, daemon_id)
                event.flow_controlled_length = 0  # type: ignore[attr-defined]
        book.flush_daemon()
    assert data_of(daemon, daemon_id) == data


def test_session_calls_go_from_the_daemon_to_the_client() -> None:
    book = playbook("session")
    path = "/moby.filesync.v1.FileSync/DiffCopy"
    stream = call(book, path, b"\x08\x01", caller=book.daemon)
    requests = book.client.of(h2.events.RequestReceived)
    assert len(requests) == 1
    client_id = requests[0].stream_id  # type: ignore[attr-defined]
    assert data_of(book.client, client_id) == grpc.frame(b"\x08\x01")
    answer(book, client_id, b"\x08\x02", callee=book.client)
    assert data_of(book.daemon, stream) == grpc.frame(b"\x08\x02")
    assert status_of(book.daemon, stream) == ("0", "")
    # the client's own services are all the daemon may call there
    refused = call(book, SOLVE, b"", caller=book.daemon)
    assert status_of(book.daemon, refused)[0] == str(grpc.PERMISSION_DENIED)


def test_goaway_from_the_client_ends_both_sides() -> None:
    book = playbook()
    book.client.conn.close_connection()
    book.flush_client()
    assert book.daemon.of(h2.events.ConnectionTerminated)
    assert book.closed


def test_garbage_after_the_preface_closes_the_tunnel() -> None:
    book = playbook()
    book.run(book.relay.receive_client(b"\xff" * 20))  # a frame longer than allowed
    assert book.client.of(h2.events.ConnectionTerminated)
    assert book.daemon.of(h2.events.ConnectionTerminated)
    assert book.closed


def test_the_relay_refuses_every_call_when_the_policy_cannot_decide(tmp_path: Path) -> None:
    from dockmoat.buildkit.decide import NoBuilds

    book = playbook()
    book.decider.policy = NoBuilds()
    stream = call(book, SOLVE, solve())
    assert status_of(book.client, stream)[0] == str(grpc.PERMISSION_DENIED)


@pytest.mark.parametrize("tunnel", ["grpc", "session"])
def test_the_relay_starts_with_settings_to_both_sides(tunnel: Tunnel) -> None:
    relay = Relay(tunnel, BuildDecider(load_policy(env={}), CLIENT, Builds(), "", None))
    commands = relay.start()
    assert {type(c) for c in commands} == {SendClient, SendUpstream}


def test_a_header_list_beyond_the_bound_ends_the_connection_not_the_guard() -> None:
    book = playbook()
    peer = book.client.conn
    stream = peer.get_next_available_stream_id()
    headers = [*grpc_headers(INFO), *[(f"x-big-{i}", "v" * 1000) for i in range(80)]]
    peer.send_headers(stream, headers)
    book.flush_client()
    assert not book.daemon.of(h2.events.RequestReceived)  # never relayed
    assert book.client.of(h2.events.ConnectionTerminated) or book.client.of(h2.events.StreamReset)


def test_more_concurrent_calls_than_the_bound_are_not_relayed() -> None:
    import hpack
    from hyperframe.frame import HeadersFrame

    from dockmoat.buildkit.relay import MAX_STREAMS

    book = playbook()
    # a misbehaving client ignores our MAX_CONCURRENT_STREAMS: raw HEADERS frames
    encoder = hpack.Encoder()
    frames = b""
    for n in range(MAX_STREAMS + 5):
        frame = HeadersFrame(2 * n + 1)
        frame.data = encoder.encode(grpc_headers(INFO))
        frame.flags.add("END_HEADERS")
        frames += frame.serialize()
    book.run(book.relay.receive_client(frames))
    assert len(book.daemon.of(h2.events.RequestReceived)) <= MAX_STREAMS
    assert book.client.of(h2.events.ConnectionTerminated) or book.client.of(h2.events.StreamReset)


def test_a_refused_tunnel_answers_every_call_and_never_needs_a_daemon() -> None:
    from dockmoat.buildkit.decide import RefuseAll

    book = playbook()
    book.relay.decider = RefuseAll("dockmoat: system.session: BuildKit is off")
    stream = call(book, "/moby.buildkit.v1.Control/ListWorkers", b"")
    assert status_of(book.client, stream) == (
        str(grpc.PERMISSION_DENIED),
        "dockmoat: system.session: BuildKit is off",
    )
    assert not book.daemon.of(h2.events.RequestReceived)


def test_goaway_ends_both_sides_after_what_is_queued() -> None:
    book = playbook("session")
    book.run(book.relay.goaway())
    assert book.client.of(h2.events.ConnectionTerminated)
    assert book.daemon.of(h2.events.ConnectionTerminated)
    assert book.closed


def test_refused_and_finished_calls_are_forgotten() -> None:
    book = playbook()
    for _ in range(50):
        call(book, "/moby.buildkit.v1.Control/Session", b"")  # refused at its headers
    stream = call(book, INFO, b"")
    daemon_id = book.daemon.of(h2.events.RequestReceived)[-1].stream_id  # type: ignore[attr-defined]
    answer(book, daemon_id, b"")
    assert status_of(book.client, stream) == ("0", "")
    assert book.relay.legs == {} and book.relay.by_callee == {}


def test_a_followed_call_says_how_it_ended() -> None:
    """Ended(ok) for each Solve of a tenant: grpc-status 0 is ok; an error, a reset or a
    connection lost is not (its claimed tags are released by the driver)."""
    book = playbook()
    book.decider.follows = lambda call: call.method.name == "Solve"  # type: ignore[method-assign]
    ok = call(book, INFO, b"")
    daemon_id = book.daemon.of(h2.events.RequestReceived)[-1].stream_id  # type: ignore[attr-defined]
    answer(book, daemon_id, b"")
    assert not [c for c in book.commands if isinstance(c, Ended)]  # Info is not followed
    done = call(book, SOLVE, solve())
    daemon_id = book.daemon.of(h2.events.RequestReceived)[-1].stream_id  # type: ignore[attr-defined]
    answer(book, daemon_id, b"")
    failed = call(book, SOLVE, solve(ref="ref2"))
    daemon_id = book.daemon.of(h2.events.RequestReceived)[-1].stream_id  # type: ignore[attr-defined]
    book.daemon.conn.send_headers(daemon_id, [(":status", "200"), ("grpc-status", "2")],
                                  end_stream=True)  # fmt: skip
    book.flush_daemon()
    lost = call(book, SOLVE, solve(ref="ref3"))
    book.run(book.relay.upstream_closed())
    ended = [(c.call.stream, c.ok) for c in book.commands if isinstance(c, Ended)]
    assert ended == [(done, True), (failed, False), (lost, False)]
    assert ok not in [stream for stream, _ in ended]


def diffcopy_answering(book: Playbook) -> tuple[int, int, h2.connection.H2Connection]:
    """A session DiffCopy the daemon calls, its client's answer headers sent: (the
    daemon's stream, the client's stream, the client's connection)."""
    stream = call(book, "/moby.filesync.v1.FileSync/DiffCopy", b"\x08\x01", caller=book.daemon)
    client_id = book.client.of(h2.events.RequestReceived)[0].stream_id  # type: ignore[attr-defined]
    peer = book.client.conn
    peer.send_headers(client_id, [(":status", "200"), ("content-type", "application/grpc")])
    return stream, client_id, peer


class RefusesAt:
    """An answer watch that refuses its `at`-th message (naming it `nth`), holds the
    `hold_at`-th, and has a last word for the caller when `last_word`."""

    def __init__(self, at: int, nth: str, *, hold_at: int = 0, last_word: bool = False) -> None:
        self.at, self.nth, self.hold_at, self.last_word = at, nth, hold_at, last_word
        self.seen = 0

    def feed(self, payload: bytes) -> Watched:
        self.seen += 1
        if self.seen == self.at:
            raise ValueError(f"the {self.nth} message is refused")
        return Watched(payload, hold=self.seen == self.hold_at)

    def refused(self, message: str) -> bytes | None:
        return b"last:" + message.encode() if self.last_word else None


def test_messages_that_come_in_one_read_go_out_in_as_few_frames_as_fit() -> None:
    """A message's last, short frame waits for the rest of the read: the tail of one
    message and the head of the next share a frame (the relay's cost is per frame)."""
    book = playbook("session")
    stream, client_id, peer = diffcopy_answering(book)
    payloads = [bytes([n]) * 20_000 for n in range(3)]
    sent = b"".join(grpc.frame(p) for p in payloads)
    for start in range(0, len(sent), 16_384):  # as grpc-go writes them, up to 16 KiB a frame
        peer.send_data(client_id, sent[start : start + 16_384])
    book.flush_client()  # one read
    frames = book.daemon.of(h2.events.DataReceived, stream)
    assert data_of(book.daemon, stream) == sent
    assert len(frames) == -(-len(sent) // 16_384)  # 4 frames, not one more per message
    peer.send_headers(client_id, [("grpc-status", "0")], end_stream=True)
    book.flush_client()
    assert status_of(book.daemon, stream) == ("0", "")
    assert data_of(book.daemon, stream) == sent


def test_a_refusal_in_the_middle_of_a_read_comes_after_the_whole_messages_before_it() -> None:
    """What was read and passed before a refused message reaches the caller whole, even
    from the same DATA frame, then the guard's error (a caller that reads a message cut
    short by the trailers may report the cut instead of the guard's reason)."""

    book = playbook("session")
    book.decider.watch = lambda call: RefusesAt(2, "second")  # type: ignore[method-assign,assignment,return-value]
    stream, client_id, peer = diffcopy_answering(book)
    first = b"\x01" * 20_000
    sent = grpc.frame(first) + grpc.frame(b"\x02" * 100)
    for start in range(0, len(sent), 16_384):
        peer.send_data(client_id, sent[start : start + 16_384])
    book.flush_client()  # one read: the first message, then the refused one
    assert data_of(book.daemon, stream) == grpc.frame(first)
    status, message = status_of(book.daemon, stream)
    assert status == str(grpc.PERMISSION_DENIED) and "the second message is refused" in message


def test_a_refused_watched_call_tells_why_in_its_own_protocol_in_place_of_what_was_held() -> None:
    """A watch's last word (`AnswerWatch.refused`) reaches the caller after what passed
    and before the gRPC error; what was held, and the callee's own end, never do."""

    book = playbook("session")
    book.decider.watch = lambda call: RefusesAt(3, "third", hold_at=2, last_word=True)  # type: ignore[method-assign,assignment,return-value]
    stream, client_id, peer = diffcopy_answering(book)
    peer.send_data(client_id, grpc.frame(b"passed"))
    book.flush_client()
    assert data_of(book.daemon, stream) == grpc.frame(b"passed")
    peer.send_data(client_id, grpc.frame(b"held"))
    book.flush_client()
    assert data_of(book.daemon, stream) == grpc.frame(b"passed")
    peer.send_data(client_id, grpc.frame(b"refused"))
    peer.send_headers(client_id, [("grpc-status", "0")], end_stream=True)
    book.flush_client()
    status, message = status_of(book.daemon, stream)
    assert status == str(grpc.PERMISSION_DENIED) and "the third message is refused" in message
    last = grpc.frame(b"last:" + message.encode())
    assert data_of(book.daemon, stream) == grpc.frame(b"passed") + last
