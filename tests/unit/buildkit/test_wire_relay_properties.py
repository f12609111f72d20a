"""Property tests: any byte sequence is decoded or refused, never a crash."""

from __future__ import annotations

import contextlib

import h2.config
import h2.connection
import h2.exceptions
import hyperframe.frame
from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.api.request import ClientIdentity
from dockmoat.buildkit import grpc, messages, services
from dockmoat.buildkit.decide import BuildDecider, Builds
from dockmoat.buildkit.relay import Close, FrameGate, Relay, SendClient, SendUpstream
from dockmoat.buildkit.wire import WireError, fields, len_field, string_map_field, varint
from dockmoat.policy.engine import load_policy

DECODERS = sorted(
    {m.decode for m in (*services.GRPC_METHODS.values(), *services.SESSION_METHODS.values())},
    key=repr,
)
POLICY = load_policy("baseline", env={})


@given(st.binary(max_size=512))
def test_wire_fields_read_or_refuse(data: bytes) -> None:
    with contextlib.suppress(WireError):
        for item in fields(data):
            assert item.number > 0


@given(st.sampled_from(DECODERS), st.binary(max_size=512))
def test_every_decoder_reads_or_refuses(decode: services.Decoder, data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(data)


@given(st.sampled_from(DECODERS), st.lists(st.binary(max_size=40), max_size=6))
def test_decoders_read_nested_noise_or_refuse(decode: services.Decoder, parts: list[bytes]) -> None:
    # well-formed outer fields whose contents are noise: nested messages must not crash
    data = b"".join(len_field(n % 17 + 1, p) for n, p in enumerate(parts))
    with contextlib.suppress(WireError):
        decode(data)


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5))
def test_string_maps_round_trip(attrs: dict[str, str]) -> None:
    raw = b"".join(string_map_field(7, k, v) for k, v in attrs.items())
    assert messages.control_solve(raw).frontend_attrs == attrs


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_round_trip(value: int) -> None:
    assert messages.ref_only(varint(2 << 3) + varint(value), 1) == messages.RefOnly("")
    assert next(iter(fields(varint(1 << 3) + varint(value)))).value == value


@given(st.lists(st.binary(max_size=300), max_size=5), st.data())
def test_grpc_messages_survive_any_split(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(grpc.frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = grpc.MessageReader()
    got: list[bytes] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        got += reader.feed(stream[last:cut])
        last = cut
    assert got == payloads
    assert reader.pending == 0


@given(st.lists(st.binary(max_size=300), max_size=5), st.lists(st.integers(1, 64), max_size=40))
def test_grpc_messages_come_out_whole_from_pieces_of_any_size(
    payloads: list[bytes], sizes: list[int]
) -> None:
    """The reader keeps what it was fed as pieces (no copy): a piece it was fed earlier is
    never changed by what comes after, and each message comes out whole, in order."""
    stream = b"".join(grpc.frame(p) for p in payloads)
    reader = grpc.MessageReader()
    got: list[bytes] = []
    pos = 0
    for size in [*sizes, len(stream)]:
        piece = bytearray(stream[pos : pos + size])
        got += reader.feed(bytes(piece))
        piece[:] = b"x" * len(piece)  # the caller reuses its buffer
        pos += size
    assert got == payloads
    assert all(isinstance(p, bytes) for p in got)


@given(st.binary(max_size=40), st.booleans(), st.integers(0, 40), st.integers(1, 1 << 31 - 1))
def test_a_data_frame_reads_as_hyperframe_writes_it(
    data: bytes, padded: bool, padding: int, stream_id: int
) -> None:
    """The relay's short cut for a DATA frame's text (h2 makes it for every frame it
    receives) gives hyperframe's own text (the relay's import installs it)."""
    frame = hyperframe.frame.DataFrame(stream_id, data)
    if padded:
        frame.flags.add("PADDED")
        frame.pad_length = padding
    body = hyperframe.frame._raw_data_repr(frame.serialize_body())
    assert repr(frame) == f"DataFrame(stream_id={stream_id}, flags={frame.flags!r}): {body}"


@given(st.integers(0, 24), st.lists(st.integers(0, 40), max_size=8), st.data())
def test_the_frame_gate_finds_every_frame_header_in_any_split(
    preface: int, lengths: list[int], data: st.DataObject
) -> None:
    """A frame longer than the bound is refused as soon as its header is in, however the
    bytes are cut; frames within it pass."""
    limit = 30
    stream = b"p" * preface + b"".join(
        n.to_bytes(3, "big") + b"\x00\x00" + b"\x00\x00\x00\x01" + b"\xff" * n for n in lengths
    )
    over = next((i for i, n in enumerate(lengths) if n > limit), None)
    refused_at = None if over is None else preface + sum(9 + n for n in lengths[:over]) + 9
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    gate = FrameGate(preface, limit)
    last = 0
    for cut in [*cuts, len(stream)]:
        try:
            gate.feed(stream[last:cut])
        except h2.exceptions.FrameTooLargeError:
            assert refused_at is not None and last < refused_at <= cut
            return
        assert refused_at is None or cut < refused_at
        last = cut
    assert refused_at is None


@given(st.binary(max_size=300))
def test_grpc_framing_reads_or_refuses(data: bytes) -> None:
    reader = grpc.MessageReader(max_message=1024)
    try:
        for payload in reader.feed(data):
            assert len(payload) <= 1024
    except grpc.FramingError as error:
        assert error.status in (grpc.UNIMPLEMENTED, grpc.INTERNAL, grpc.RESOURCE_EXHAUSTED)


def _relay() -> tuple[Relay, bytes]:
    decider = BuildDecider(POLICY, ClientIdentity(listener="p"), Builds(), "", None)
    relay = Relay("grpc", decider)
    relay.start()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    return relay, client.data_to_send()


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_any_bytes_from_the_client_are_relayed_decided_or_close(chunks: list[bytes]) -> None:
    relay, preface = _relay()
    for chunk in [preface, *chunks]:
        commands = relay.receive_client(chunk)
        for command in commands:
            assert isinstance(command, SendClient | SendUpstream | Close) or hasattr(
                command, "token"
            )
            if isinstance(command, Close):
                assert relay.receive_client(b"\x00" * 9) == []  # closed stays closed
                return


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_any_bytes_from_the_daemon_never_crash_the_relay(chunks: list[bytes]) -> None:
    relay, _preface = _relay()
    for chunk in chunks:
        for command in relay.receive_upstream(chunk):
            if isinstance(command, Close):
                return


def test_a_decoder_refuses_a_string_that_is_not_utf8() -> None:
    try:
        messages.control_solve(len_field(1, b"\xff\xfe"))
    except WireError:
        return
    raise AssertionError("invalid UTF-8 was read as a string")
