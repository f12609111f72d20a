"""HTTP/1.x framing for the gateway, sans-IO: bytes in, typed events out.

Parsing is httptools (llhttp) in its strict mode, so ambiguous framing (both
Content-Length and Transfer-Encoding, duplicate lengths, bad chunk sizes,
data after `Connection: close`, bare LF...) is an error, answered with 400.
On top of llhttp this module enforces what Go's server (dockerd) additionally
requires or what keeps the gateway bounded: one Host header on HTTP/1.1, a
head size limit, `chunked` as the only transfer coding.

Heads are re-serialised from the parsed values (never copied as raw bytes), so
the daemon receives exactly what was checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, NamedTuple

import httptools

from dockmoat.errors import ProtocolError

MAX_HEAD: Final = 64 * 1024
MAX_HEADERS: Final = 256

Headers = tuple[tuple[str, str], ...]


def header_value(headers: Headers, name: str) -> str | None:
    """The first value of a header (Go's `Header.Get`), or None."""
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


class RequestHead(NamedTuple):
    """A request's head as parsed. Immutable; a NamedTuple rather than a frozen
    dataclass because one is built per request, and a frozen dataclass's
    field-by-field `object.__setattr__` made that the dearest step of parsing."""

    method: str
    target: str
    http_version: str  # "1.0" or "1.1"
    headers: Headers
    content_length: int | None
    chunked: bool
    keep_alive: bool
    upgrade: bool
    content_type: str | None = None  # the first Content-Type value (Go's Header.Get)

    @property
    def has_body(self) -> bool:
        return self.chunked or (self.content_length or 0) > 0

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    http_version: str
    headers: Headers
    content_length: int | None
    chunked: bool
    keep_alive: bool

    @property
    def until_close(self) -> bool:
        """A body delimited by the end of the connection (no length, not chunked)."""
        return self.content_length is None and not self.chunked and _has_body(self.status)

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageEnd:
    pass


@dataclass(frozen=True, slots=True)
class UpgradeStart:
    """The message before was the last HTTP on this side; `leftover` is raw protocol."""

    leftover: bytes


@dataclass(frozen=True, slots=True)
class Invalid:
    """The byte stream cannot be read unambiguously from here on (answer 400, close)."""

    reason: str


RequestEvent = RequestHead | BodyData | MessageEnd | UpgradeStart | Invalid
ResponseEvent = ResponseHead | BodyData | MessageEnd | UpgradeStart | Invalid


def _has_body(status: int) -> bool:
    return not (100 <= status < 200 or status in (204, 304))


_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
_UNSAFE_NAME = re.compile(r"[\r\n\x00: ]")


def _check_token_free(text: str, what: str) -> None:
    if _CTL_RE.search(text) is not None:
        raise ProtocolError(f"invalid character in {what}")


class _Collect:
    """Callbacks shared by request and response parsing (the per-request hot path)."""

    __slots__ = (
        "between",
        "complete",
        "events",
        "head_bytes",
        "head_done",
        "headers",
        "headers_complete",
        "max_head",
        "status",
        "url",
    )  # fmt: skip

    def __init__(self, max_head: int, headers_complete: Callable[[], None]) -> None:
        self.max_head = max_head
        self.headers_complete = headers_complete
        self.url = bytearray()
        self.status = bytearray()
        self.headers: list[tuple[str, str]] = []
        self.head_bytes = 0
        self.events: list[object] = []
        self.head_done = False
        self.complete = False  # a whole message was parsed (ResponseReader: its one message)
        # No byte of a message is inside llhttp: none began, or the last one ended.
        self.between = True

    def on_headers_complete(self) -> None:
        self.headers_complete()

    def on_message_begin(self) -> None:
        self.between = False
        if self.head_bytes:
            self.url.clear()
            self.status.clear()
            self.headers = []
            self.head_bytes = 0
        self.head_done = False

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        if self.head_bytes > self.max_head:
            raise ProtocolError("request header too large")
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.head_bytes += len(status)
        if self.head_bytes > self.max_head:
            raise ProtocolError("request header too large")
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_head:
            raise ProtocolError("request header too large")
        headers = self.headers
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError("too many header fields")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.events.append(BodyData(bytes(body)))

    def on_message_complete(self) -> None:
        self.complete = True
        self.between = True
        self.events.append(MessageEnd())


def _framing(headers: Headers) -> tuple[int | None, bool]:
    """(Content-Length, chunked), refusing what Go and llhttp would read differently."""
    encodings: list[str] = []
    lengths: list[str] = []
    for key, value in headers:
        # Cheap pre-filter on the name's length: this runs for every header of every message.
        if len(key) == 17 and key.lower() == "transfer-encoding":
            encodings.append(value)
        elif len(key) == 14 and key.lower() == "content-length":
            lengths.append(value)
    return _framing_of(lengths, encodings)


def _framing_of(lengths: list[str], encodings: list[str]) -> tuple[int | None, bool]:
    chunked = False
    if encodings:
        if len(encodings) != 1 or encodings[0].strip().lower() != "chunked":
            raise ProtocolError("unsupported Transfer-Encoding (only a single chunked)")
        chunked = True
        if lengths:
            raise ProtocolError("both Content-Length and Transfer-Encoding")
    length: int | None = None
    if lengths:
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            raise ProtocolError("invalid Content-Length")
        length = int(lengths[0].strip())
    return length, chunked


def _scan_request_headers(version: str, headers: Headers) -> tuple[int | None, bool, str | None]:
    """One pass over a request's headers: (Content-Length, chunked, first Content-Type).

    Refuses what Go's server refuses or reads differently: not exactly one Host on
    HTTP/1.1 (at most one on 1.0), control bytes in values, ambiguous framing.
    """
    hosts = 0
    lengths: list[str] = []
    encodings: list[str] = []
    content_type: str | None = None
    for key, value in headers:
        size = len(key)  # cheap pre-filter: only these lengths can be a name looked at
        if size == 4 or size == 12 or size == 14 or size == 17:
            lkey = key.lower()
            if lkey == "host":
                hosts += 1
            elif lkey == "content-type":
                if content_type is None:
                    content_type = value
            elif lkey == "content-length":
                lengths.append(value)
            elif lkey == "transfer-encoding":
                encodings.append(value)
    if version == "1.1" and hosts != 1:
        raise ProtocolError("missing or repeated Host header")
    if hosts > 1:
        raise ProtocolError("repeated Host header")
    # One scan over all values (tab, the separator, is allowed in values).
    if _CTL_RE.search("\t".join(value for _key, value in headers)) is not None:
        for name, value in headers:
            _check_token_free(value, f"header {name}")
    length, chunked = _framing_of(lengths, encodings)
    return length, chunked, content_type


class RequestReader:
    """Client bytes to request events; supports pipelining and upgrades."""

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self._collect = _Collect(max_head=max_head, headers_complete=self._on_headers_complete)
        self._parser = httptools.HttpRequestParser(self._collect)
        self._dead = False
        self._upgraded = False
        # llhttp stops at the head of an upgrade request; a Content-Length body
        # (exec start's JSON) still belongs to HTTP and is counted out here.
        self._upgrade_body_left = 0
        self._last_head: RequestHead | None = None

    def _on_headers_complete(self) -> None:
        collect = self._collect
        headers = tuple(collect.headers)
        target = collect.url.decode("latin-1")
        version = self._parser.get_http_version()
        method = self._parser.get_method().decode("ascii")
        length, chunked, content_type = _scan_request_headers(version, headers)
        self._last_head = RequestHead(
            method,
            target,
            version,
            headers,
            length,
            chunked,
            bool(self._parser.should_keep_alive()),
            bool(self._parser.should_upgrade()),
            content_type,
        )
        collect.events.append(self._last_head)
        collect.head_done = True

    @property
    def idle(self) -> bool:
        """True between messages: no part of a request has been read."""
        return self._collect.head_bytes == 0 or self._collect.head_done

    @property
    def at_boundary(self) -> bool:
        """True when the next byte starts a request: llhttp holds no part of one.

        Stricter than `idle` (which is also true after the first bytes of a method):
        a read that starts and ends at a boundary and holds one bodiless request is
        parsed the same way every time, which the fast lane's remembered decisions
        rely on.
        """
        return self._collect.between and not self._dead and not self._upgraded

    @property
    def in_head(self) -> bool:
        """True while a request head has started but is not complete (slow-loris guard)."""
        return self._collect.head_bytes > 0 and not self._collect.head_done

    def feed(self, data: bytes) -> list[RequestEvent]:
        if self._dead:
            return [Invalid("connection is no longer readable as HTTP")]
        if self._upgraded:
            if self._upgrade_body_left:
                return self._upgrade_body(bytes(data))
            return [BodyData(data)] if data else []
        events = self._collect.events
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = int(upgrade.args[0])
            self._upgraded = True
            head = self._last_head
            if head is not None and head.chunked:
                self._dead = True
                events.append(Invalid("chunked body on an upgrade request"))
            elif head is not None and (head.content_length or 0) > 0:
                if events and isinstance(events[-1], MessageEnd):
                    events.pop()
                self._upgrade_body_left = head.content_length or 0
                events.extend(self._upgrade_body(bytes(data[offset:])))
            else:
                events.append(UpgradeStart(bytes(data[offset:])))
        except ProtocolError as error:
            self._dead = True
            events.append(Invalid(str(error)))
        except httptools.HttpParserError as error:
            self._dead = True
            cause = error.__context__
            reason = str(cause) if isinstance(cause, ProtocolError) else str(error)
            events.append(Invalid(reason or "malformed HTTP request"))
        self._collect.events = []
        return events  # type: ignore[return-value]

    def _upgrade_body(self, data: bytes) -> list[RequestEvent]:
        take = min(self._upgrade_body_left, len(data))
        self._upgrade_body_left -= take
        out: list[RequestEvent] = [BodyData(data[:take])] if take else []
        if self._upgrade_body_left == 0:
            out += [MessageEnd(), UpgradeStart(data[take:])]
        return out


class ResponseFramer:
    """Where a daemon answer relayed byte for byte ends; no header or body copies.

    For answers nobody rewrites, the gateway needs only the status, whether the
    daemon keeps the connection, and the byte where the answer ends. llhttp
    (strict) still walks the framing (lengths, chunks) to find that end and
    refuses what is malformed; without header or body callbacks it does so
    without a Python call per header or per body piece. Not for answers to HEAD
    (llhttp cannot know they have no body) or upgrades.
    """

    __slots__ = ("_parser", "done", "head_done", "invalid", "keep_alive", "status")

    def __init__(self) -> None:
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False
        self.head_done = False
        self.done = False
        self.invalid: str | None = None

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # called from its own feed_data
        self.status = int(parser.get_status_code())
        # False too when the body runs until the daemon closes (llhttp: needs EOF).
        self.keep_alive = bool(parser.should_keep_alive())
        self.head_done = True

    def on_message_complete(self) -> None:
        self.done = True

    def feed(self, data: bytes) -> None:
        """Parse one read; sets `head_done`, `done`, or `invalid` (then stop relaying)."""
        if self.done:
            if data:
                self.invalid = "data after the end of the response"
            return
        parser = self._parser
        if parser is None:  # an invalid answer: nothing more is parsed
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.invalid = "the daemon switched protocols unasked"
        except httptools.HttpParserError as error:
            self.invalid = str(error) or "malformed response"
        if self.done or self.invalid is not None:
            # The parser holds this framer's callbacks: a reference cycle, one per
            # answer, that only the cyclic GC would free. Dropped once nothing more is
            # parsed, the framer goes with its last reference instead.
            self._parser = None

    def feed_eof(self) -> None:
        """The daemon closed: the end of an answer it does not keep the connection for."""
        if self.done:
            return
        if self.head_done and not self.keep_alive:
            # An until-close body ends here. A truncated one with its own length also
            # ends here; it was relayed as is, so the client sees the short body.
            self.done = True
        else:
            self.invalid = "upstream closed the connection mid-response"


class HeldAnswer(ResponseFramer):
    """A whole daemon answer held for a stage to rewrite: framed as `ResponseFramer`
    does, its body collected as llhttp unframes it, and no Python call per header.
    `head()` parses the head only when it is needed (the answer changed, or an error)."""

    __slots__ = ("body", "raw", "size")

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[bytes] = []  # as read, head and framing included
        self.body: list[bytes] = []
        self.size = 0

    def on_body(self, body: bytes) -> None:
        self.body.append(bytes(body))

    def feed(self, data: bytes) -> None:
        self.raw.append(data)
        self.size += len(data)
        super().feed(data)

    def head(self, max_head: int) -> ResponseHead | None:
        """The answer's head, parsed from the bytes held (None if it does not parse)."""
        reader = ResponseReader(head_request=True, max_head=max_head)
        events = reader.feed(b"".join(self.raw))
        return next((e for e in events if isinstance(e, ResponseHead)), None)


def _persistent(version: str, connection: str | None) -> bool:
    """Whether a message of this version with this Connection header keeps the connection."""
    tokens = {t.strip().lower() for t in (connection or "").split(",")}
    if version == "1.1":
        return "close" not in tokens
    return version == "1.0" and "keep-alive" in tokens


class _StopAfterHead(Exception):
    """Ends parsing of a response to HEAD (it has no body, whatever it says)."""


class ResponseReader:
    """Daemon bytes to the events of ONE response (a new reader per response)."""

    def __init__(self, *, head_request: bool, max_head: int = MAX_HEAD) -> None:
        self._collect = _Collect(max_head=max_head, headers_complete=self._on_headers_complete)
        self._parser = httptools.HttpResponseParser(self._collect)
        self._head_request = head_request
        self._head: ResponseHead | None = None
        self.done = False

    def _on_headers_complete(self) -> None:
        collect = self._collect
        headers = tuple(collect.headers)
        length, chunked = _framing(headers)
        status = int(self._parser.get_status_code())
        version = self._parser.get_http_version()
        if self._head_request:
            # llhttp does not know the request was a HEAD: for an answer without a length
            # (dockerd's HEAD /containers/{id}/archive) it would say "body until close",
            # hence no keep-alive. A HEAD answer has no body, so only the version and the
            # Connection header decide (RFC 9112 9.3).
            keep_alive = _persistent(version, header_value(headers, "connection"))
        else:
            keep_alive = bool(self._parser.should_keep_alive())
        self._head = ResponseHead(
            status=status,
            reason=collect.status.decode("latin-1"),
            http_version=version,
            headers=headers,
            content_length=length,
            chunked=chunked,
            keep_alive=keep_alive,
        )
        collect.events.append(self._head)
        if self._head_request:
            collect.events.append(MessageEnd())
            raise _StopAfterHead

    def feed(self, data: bytes) -> list[ResponseEvent]:
        if self.done:
            return [Invalid("data after the end of the response")] if data else []
        collect = self._collect
        events = collect.events
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = int(upgrade.args[0])
            events.append(UpgradeStart(bytes(data[offset:])))
            self.done = True
        except httptools.HttpParserError as error:
            if not isinstance(error.__context__, _StopAfterHead):
                events.append(Invalid(str(error.__context__ or error)))
            self.done = True
        except ProtocolError as error:
            events.append(Invalid(str(error)))
            self.done = True
        if collect.complete:
            self.done = True
        collect.events = []
        return events  # type: ignore[return-value]

    def feed_eof(self) -> list[ResponseEvent]:
        """The daemon closed: the end of an until-close body, or a truncated response."""
        if self.done:
            return []
        self.done = True
        if self._head is not None and self._head.until_close:
            return [MessageEnd()]
        return [Invalid("upstream closed the connection mid-response")]


def _serialise_headers(headers: Headers) -> list[str]:
    # One scan over all names and one over all values, not two per header ("\x01" joins
    # them: neither pattern matches it).
    if _UNSAFE_NAME.search("\x01".join(name for name, _value in headers)) is not None or (
        _UNSAFE_VALUE.search("\x01".join(value for _name, value in headers)) is not None
    ):
        raise ProtocolError("header not serialisable")
    return [f"{name}: {value}\r\n" for name, value in headers]


_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "expect"})
_FRAMING_SIZES = frozenset(len(name) for name in _FRAMING_HEADERS)


def serialise_request_head(
    head: RequestHead,
    target: str,
    *,
    content_length: int | None,
    chunked: bool,
) -> bytes:
    """The head sent upstream: parsed headers, our own framing headers."""
    if chunked:
        framing = "Transfer-Encoding: chunked\r\n"
    elif content_length is not None:
        framing = f"Content-Length: {content_length}\r\n"
    else:
        framing = ""
    return (
        f"{head.method} {target} HTTP/{head.http_version}\r\n"
        f"{_forwarded_headers(head.headers)}{framing}\r\n"
    ).encode("latin-1")


@lru_cache(maxsize=64)
def _forwarded_headers(headers: Headers) -> str:
    """A request's header lines as sent upstream, without its framing headers.

    Memoised: a client sends the same headers with request after request (the docker
    CLI's User-Agent, Host and Content-Type), whatever their targets. At most 64 sets
    of at most `max_head` bytes are held.
    """
    kept = tuple(
        (k, v) for k, v in headers
        if len(k) not in _FRAMING_SIZES or k.lower() not in _FRAMING_HEADERS
    )  # fmt: skip
    return "".join(_serialise_headers(kept))


def serialise_response_head(head: ResponseHead, *, content_length: int | None = None) -> bytes:
    """The head relayed to the client; `content_length` replaces the body framing."""
    headers = head.headers
    if content_length is not None:
        headers = tuple(
            (k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")
        )
        headers += (("Content-Length", str(content_length)),)
    reason = head.reason or "-"
    lines = [f"HTTP/{head.http_version} {head.status} {reason}\r\n"]
    lines += _serialise_headers(headers)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never an empty one: that is the terminator)."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


LAST_CHUNK: Final = b"0\r\n\r\n"

_REASONS: Final = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def error_response(
    status: int, message: str, *, keep_alive: bool, head_only: bool = False
) -> bytes:
    """A Docker-shaped error: `{"message": ...}` as JSON, like dockerd writes it."""
    return json_response(status, {"message": message}, keep_alive=keep_alive, head_only=head_only)


def json_response(
    status: int, document: object, *, keep_alive: bool, head_only: bool = False
) -> bytes:
    """A whole answer with a JSON body (dockmoat's own answers, errors and others)."""
    body = json.dumps(document).encode() + b"\n"
    reason = _REASONS.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        "\r\n"
    ).encode()
    return head if head_only else head + body
