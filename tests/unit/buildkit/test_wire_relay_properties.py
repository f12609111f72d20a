"""Property tests: any byte sequence is decoded or refused, never a crash."""

from __future__ import annotations

import contextlib

import h2.config
import h2.connection
from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.api.request import ClientIdentity
from dockmoat.buildkit import grpc, messages, services
from dockmoat.buildkit.decide import BuildDecider, Builds
from dockmoat.buildkit.relay import Close, Relay, SendClient, SendUpstream
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
