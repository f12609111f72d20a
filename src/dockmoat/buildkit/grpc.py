"""gRPC over HTTP/2, the parts the guard speaks: message framing, status codes, errors.

A gRPC message on a stream's DATA is a 5-byte prefix (compressed flag, big-endian
length) and the message. `MessageReader` gives whole messages only, bounded; a
compressed one is refused (the guard cannot read it, so it is not forwarded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

OK: Final = 0
CANCELLED: Final = 1
INVALID_ARGUMENT: Final = 3
NOT_FOUND: Final = 5
PERMISSION_DENIED: Final = 7
RESOURCE_EXHAUSTED: Final = 8
UNIMPLEMENTED: Final = 12
INTERNAL: Final = 13

PREFIX: Final = 5
MAX_MESSAGE: Final = 64 * 1024 * 1024
"""BuildKit's own limit for a message (its gRPC servers take up to 64 MiB in 0.13+)."""


class FramingError(ValueError):
    """The DATA of a gRPC stream is not a sequence of messages the guard can read."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def prefix(size: int) -> bytes:
    """The prefix of one uncompressed gRPC message of `size` bytes."""
    return b"\x00" + size.to_bytes(4, "big")


def frame(payload: bytes) -> bytes:
    """One uncompressed gRPC message with its prefix."""
    return prefix(len(payload)) + payload


@dataclass(slots=True)
class MessageReader:
    """Bytes of one direction of one stream in, whole message payloads out.

    A payload's pieces are kept as they arrive and joined once it is whole: each byte
    is copied once, however many DATA frames a message spans."""

    max_message: int = MAX_MESSAGE
    _head: bytearray = field(default_factory=bytearray)  # the prefix being read
    _size: int = -1  # the payload's size once its prefix is read; -1 before
    _parts: list[bytes | memoryview] = field(default_factory=list)
    _have: int = 0  # bytes of the payload in `_parts`

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        view = memoryview(data)
        pos = 0
        end = len(view)
        while True:
            if self._size < 0:
                take = min(PREFIX - len(self._head), end - pos)
                self._head += view[pos : pos + take]
                pos += take
                if len(self._head) < PREFIX:
                    return out
                self._size = self._open(self._head)
                self._head.clear()
            take = min(self._size - self._have, end - pos)
            if take:
                self._parts.append(view[pos : pos + take])
                self._have += take
                pos += take
            if self._have < self._size:
                return out
            parts = self._parts
            whole = len(parts) == 1 and len(parts[0]) == len(data)
            out.append(data if whole and isinstance(data, bytes) else b"".join(parts))
            self._parts = []
            self._have = 0
            self._size = -1
            if pos == end:
                return out

    def _open(self, head: bytearray) -> int:
        """The payload size a prefix declares, or FramingError."""
        flag = head[0]
        size = int.from_bytes(head[1:PREFIX], "big")
        if flag == 1:
            raise FramingError(
                UNIMPLEMENTED, "a compressed gRPC message, which the guard cannot read"
            )
        if flag != 0:
            raise FramingError(INTERNAL, f"a gRPC message with the flag byte {flag}")
        if size > self.max_message:
            raise FramingError(
                RESOURCE_EXHAUSTED,
                f"a gRPC message of {size} bytes (at most {self.max_message} are read)",
            )
        return size

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete."""
        return len(self._head) + self._have


def status_headers(status: int, message: str) -> list[tuple[str, str]]:
    """Trailers (or the tail of a trailers-only answer) for a gRPC status."""
    # grpc-message is percent-encoded (gRPC's HTTP/2 protocol spec); keep it readable.
    encoded = quote(message[:2000], safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")
    return [("grpc-status", str(status)), ("grpc-message", encoded)]


def trailers_only(status: int, message: str) -> list[tuple[str, str]]:
    """A whole error answer in one HEADERS frame (`Trailers-Only`)."""
    return [
        (":status", "200"),
        ("content-type", "application/grpc"),
        *status_headers(status, message),
    ]
