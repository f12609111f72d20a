"""The gateway's HTTP framing as scripted byte conversations, plus fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.gateway.sansio.http import (
    BodyData,
    Invalid,
    MessageEnd,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    UpgradeStart,
    error_response,
    serialise_request_head,
)


def feed_all(data: bytes, *, step: int | None = None) -> list[object]:
    reader = RequestReader()
    out: list[object] = []
    if step is None:
        out += reader.feed(data)
    else:
        for i in range(0, len(data), step):
            out += reader.feed(data[i : i + step])
    return out


def body_of(events: list[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, BodyData))


def test_pipelined_requests_in_one_read() -> None:
    events = feed_all(
        b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
        b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}"
    )
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.target for h in heads] == ["/_ping", "/containers/create"]
    assert sum(isinstance(e, MessageEnd) for e in events) == 2
    assert body_of(events) == b"{}"


def test_byte_at_a_time_equals_one_read() -> None:
    data = (
        b"POST /build HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert body_of(feed_all(data, step=1)) == body_of(feed_all(data)) == b"hello world"


def test_http10_and_keep_alive() -> None:
    (head, end) = feed_all(b"GET /_ping HTTP/1.0\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert head.http_version == "1.0"
    assert not head.keep_alive
    assert isinstance(end, MessageEnd)


def test_ambiguous_framing_is_invalid() -> None:
    for data in (
        b"POST / HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
    ):
        events = feed_all(data)
        assert isinstance(events[-1], Invalid), data
        assert not any(isinstance(e, RequestHead) for e in events), data


def test_bad_chunk_size_invalidates_the_body() -> None:
    events = feed_all(b"POST / HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert isinstance(events[0], RequestHead)
    assert isinstance(events[-1], Invalid)
    assert not any(isinstance(e, MessageEnd) for e in events)


def test_oversized_head_is_invalid() -> None:
    reader = RequestReader(max_head=1024)
    events = reader.feed(b"GET / HTTP/1.1\r\nHost: d\r\nX: " + b"a" * 2000 + b"\r\n\r\n")
    assert isinstance(events[-1], Invalid)


def test_upgrade_with_body_keeps_body_then_raw() -> None:
    events = feed_all(
        b"POST /exec/x/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
        b'Content-Length: 13\r\n\r\n{"Tty":false}stdin-bytes',
        step=7,
    )
    assert body_of(events[: events.index(next(e for e in events if isinstance(e, MessageEnd)))])
    upgrade = [e for e in events if isinstance(e, UpgradeStart)]
    assert len(upgrade) == 1
    after = events[events.index(upgrade[0]) + 1 :]
    raw = upgrade[0].leftover + b"".join(e.data for e in after if isinstance(e, BodyData))
    assert raw == b"stdin-bytes"
    assert body_of(events[: events.index(upgrade[0])]) == b'{"Tty":false}'


def test_response_head_request_and_until_close() -> None:
    reader = ResponseReader(head_request=True)
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert isinstance(events[0], ResponseHead)
    assert isinstance(events[1], MessageEnd)
    reader = ResponseReader(head_request=False)
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\nabc")
    assert isinstance(events[0], ResponseHead)
    assert events[0].until_close
    assert reader.feed_eof() == [MessageEnd()]


@pytest.mark.parametrize(
    ("version", "connection", "keep"),
    [
        ("1.1", None, True),
        ("1.1", "close", False),
        ("1.1", "Keep-Alive, Close", False),
        ("1.0", None, False),
        ("1.0", "keep-alive", True),
    ],
)
def test_head_answer_without_length_keeps_the_connection(
    version: str, connection: str | None, keep: bool
) -> None:
    # dockerd answers HEAD /containers/{id}/archive with 200 and no Content-Length; the
    # answer has no body (it is a HEAD), so it does not end the connection (docker cp).
    extra = f"Connection: {connection}\r\n" if connection else ""
    raw = f"HTTP/{version} 200 OK\r\nX-Docker-Container-Path-Stat: e30=\r\n{extra}\r\n"
    reader = ResponseReader(head_request=True)
    head, end = reader.feed(raw.encode())
    assert isinstance(head, ResponseHead) and isinstance(end, MessageEnd)
    assert head.keep_alive is keep
    assert reader.done


def test_response_101_leftover() -> None:
    reader = ResponseReader(head_request=False)
    events = reader.feed(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nout")
    assert isinstance(events[-1], UpgradeStart)
    assert events[-1].leftover == b"out"


def test_truncated_response_is_invalid() -> None:
    reader = ResponseReader(head_request=False)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert isinstance(reader.feed_eof()[0], Invalid)


def test_serialised_head_has_our_framing_only() -> None:
    (head, *_rest) = feed_all(
        b"POST /x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
        b"X-A: 1\r\n\r\n0\r\n\r\n"
    )
    assert isinstance(head, RequestHead)
    out = serialise_request_head(head, "/v1.41/x", content_length=5, chunked=False)
    assert out == b"POST /v1.41/x HTTP/1.1\r\nHost: d\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n"


def test_error_response_is_docker_shaped() -> None:
    data = error_response(403, 'no "way"', keep_alive=False)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 403 Forbidden")
    assert body == b'{"message": "no \\"way\\""}\n'


_TOKENS = st.sampled_from(
    [b"GET ", b"POST ", b"/containers/json", b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", b"Host: d\r\n",
     b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
     b"Connection: Upgrade\r\n", b"Upgrade: tcp\r\n", b"\r\n", b"abc", b"3\r\nabc\r\n",
     b"0\r\n\r\n", b"\n", b"\x00", b" ", b":", b"%zz", b"?a=1", b"Host: e\r\n"]
)  # fmt: skip


@settings(max_examples=400)
@given(st.lists(_TOKENS, max_size=30), st.integers(min_value=1, max_value=17))
def test_fuzz_never_crashes_and_splits_do_not_matter(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    whole = feed_all(data)
    pieces = feed_all(data, step=step)
    for events in (whole, pieces):
        for event in events:
            assert isinstance(event, RequestHead | BodyData | MessageEnd | UpgradeStart | Invalid)

    # Same requests and bodies however the bytes arrive.
    def heads(evs: list[object]) -> list[RequestHead]:
        return [e for e in evs if isinstance(e, RequestHead)]

    assert heads(whole) == heads(pieces)
    assert any(isinstance(e, Invalid) for e in whole) == any(isinstance(e, Invalid) for e in pieces)


@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    for event in feed_all(data):
        assert isinstance(event, RequestHead | BodyData | MessageEnd | UpgradeStart | Invalid)
        if isinstance(event, RequestHead):
            assert event.header("host") is not None or event.http_version == "1.0"


_PING = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"


def test_at_boundary_is_false_after_the_first_byte_of_a_method() -> None:
    """`idle` allows a started method; `at_boundary` does not (remembered reads rely on it)."""
    reader = RequestReader()
    assert reader.at_boundary
    assert [type(e) for e in reader.feed(_PING)] == [RequestHead, MessageEnd]
    assert reader.at_boundary
    reader.feed(_PING + b"G")
    assert reader.idle and not reader.at_boundary
    events = reader.feed(_PING[1:])
    assert isinstance(events[0], RequestHead) and events[0].method == "GET"
    assert reader.at_boundary
    # The same bytes from a boundary are not that request.
    assert isinstance(RequestReader().feed(_PING[1:])[0], Invalid)


def test_at_boundary_after_a_body_an_upgrade_and_an_error() -> None:
    reader = RequestReader()
    reader.feed(b"POST /x HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\n\r\nab")
    assert not reader.at_boundary
    reader.feed(b"c")
    assert reader.at_boundary
    reader.feed(
        b"POST /exec/1/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    )
    assert not reader.at_boundary  # raw bytes from here
    broken = RequestReader()
    broken.feed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert not broken.at_boundary


@settings(max_examples=400)
@given(st.lists(_TOKENS, max_size=30), st.lists(st.integers(min_value=1, max_value=40)))
def test_a_read_between_boundaries_parses_alone_the_same(
    parts: list[bytes], cuts: list[int]
) -> None:
    """What the fast lane's remembered decisions rely on: a read that starts and ends at a
    message boundary and holds one bodiless request gives the same events on its own,
    on a fresh reader, and leaves that reader at a boundary too."""
    data = _PING + b"".join(parts) + _PING
    reader = RequestReader()
    offset = 0
    for cut in [len(_PING), *cuts, len(data)]:  # the first read is one whole request
        piece, offset = data[offset : offset + cut], offset + cut
        if not piece:
            break
        fresh = reader.at_boundary
        events = reader.feed(piece)
        if fresh and reader.at_boundary and [type(e) for e in events] == [RequestHead, MessageEnd]:
            again = RequestReader()
            assert again.feed(piece) == events
            assert again.at_boundary
