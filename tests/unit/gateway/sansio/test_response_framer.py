"""ResponseFramer and HeldAnswer: where a relayed-as-is daemon answer ends (checked against
ResponseReader), and what to send of each read."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.gateway.sansio.http import (
    BodyData,
    HeldAnswer,
    Invalid,
    MessageEnd,
    ResponseFramer,
    ResponseHead,
    ResponseReader,
)

PING = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 2\r\n\r\nOK"
)


def frame(data: bytes, step: int | None = None, *, eof: bool = False) -> ResponseFramer:
    framer = ResponseFramer()
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        framer.feed(piece)
        if framer.invalid is not None or framer.done:
            break
    if eof and not framer.done and framer.invalid is None:
        framer.feed_eof()
    return framer


def test_content_length_answer() -> None:
    framer = frame(PING)
    assert (framer.status, framer.keep_alive, framer.done, framer.invalid) == (
        200,
        True,
        True,
        None,
    )


def test_split_anywhere_gives_the_same_end() -> None:
    for step in range(1, len(PING)):
        framer = frame(PING, step)
        assert framer.done and framer.invalid is None, step


def test_head_known_before_the_body_ends() -> None:
    framer = frame(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert framer.head_done and framer.status == 200 and not framer.done
    framer.feed(b"lo\r\n0\r\n\r\n")
    assert framer.done and framer.invalid is None


def test_until_close_body_ends_at_eof_and_is_not_kept() -> None:
    framer = frame(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nab")
    assert framer.head_done and not framer.keep_alive and not framer.done
    framer.feed_eof()
    assert framer.done and framer.invalid is None


def test_eof_inside_a_kept_answer_is_invalid() -> None:
    framer = frame(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", eof=True)
    assert not framer.done and framer.invalid is not None
    assert frame(b"HTTP/1.1 20", eof=True).invalid is not None


def test_ambiguous_or_broken_framing_is_invalid() -> None:
    for bad in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nOK",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nOK",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"NOT HTTP\r\n\r\n",
    ):
        assert frame(bad).invalid is not None, bad


def test_bytes_after_the_end_are_refused() -> None:
    framer = frame(PING)
    framer.feed(b"extra")
    assert framer.invalid == "data after the end of the response"


def test_an_unasked_protocol_switch_is_invalid() -> None:
    framer = frame(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nraw")
    assert framer.invalid is not None


_TOKENS = st.sampled_from(
    [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 404 Not Found\r\n", b"HTTP/1.1 500 X\r\n",
     b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
     b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"Api-Version: 1.41\r\n",
     b"\r\n", b"abc", b"3\r\nabc\r\n", b"0\r\n\r\n", b"\n", b"\x00", b" ", b":"]
)  # fmt: skip


@settings(max_examples=400)
@given(st.lists(_TOKENS, max_size=25), st.integers(min_value=1, max_value=13), st.booleans())
def test_fuzz_framer_ends_where_the_full_reader_does(
    parts: list[bytes], step: int, eof: bool
) -> None:
    """Never a crash; every answer the full reader completes, the framer completes alike."""
    data = b"".join(parts)
    framer = frame(data, step, eof=eof)
    reader = ResponseReader(head_request=False)
    events = reader.feed(data)
    if eof and not any(isinstance(e, MessageEnd | Invalid) for e in events):
        events += reader.feed_eof()
    heads = [e for e in events if isinstance(e, ResponseHead)]
    completed = any(isinstance(e, MessageEnd) for e in events)
    invalid = any(isinstance(e, Invalid) for e in events)
    if completed and not invalid:
        assert heads
        assert framer.status == heads[0].status
        assert framer.keep_alive == (heads[0].keep_alive and not heads[0].until_close)
        # Byte for byte relay: the framer may stop at the end or refuse trailing bytes,
        # never run past the end as if the answer went on.
        assert framer.done
    if framer.done and framer.invalid is None and not invalid:
        assert completed or (eof and heads and heads[0].until_close)


def test_held_answer_collects_the_unframed_body_and_parses_the_head_on_demand() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n3\r\n[1,\r\n3\r\n 2]\r\n0\r\n\r\n"
    )
    for data in (PING, chunked):
        held = HeldAnswer()
        for i in range(0, len(data), 5):
            held.feed(data[i : i + 5])
        assert held.done and held.invalid is None and held.keep_alive
        assert b"".join(held.raw) == data
        expected = ResponseReader(head_request=False).feed(data)
        assert b"".join(held.body) == b"".join(e.data for e in expected if isinstance(e, BodyData))
        assert held.head(8192) == expected[0]


@settings(max_examples=300)
@given(st.lists(_TOKENS, max_size=25), st.integers(min_value=1, max_value=13))
def test_fuzz_held_answer_body_is_the_full_readers(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    held = HeldAnswer()
    for i in range(0, len(data), step):
        held.feed(data[i : i + step])
        if held.invalid is not None or held.done:
            break
    events = ResponseReader(head_request=False).feed(data)
    ends = [i for i, e in enumerate(events) if isinstance(e, MessageEnd)]
    events = events[: ends[0] + 1] if ends else events  # the first answer only
    if held.done and held.invalid is None and not any(isinstance(e, Invalid) for e in events):
        assert b"".join(held.body) == b"".join(e.data for e in events if isinstance(e, BodyData))
        assert held.head(8192) == next(e for e in events if isinstance(e, ResponseHead))
