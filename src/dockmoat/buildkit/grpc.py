"""gRPC over HTTP/2, the parts the guard speaks: message framing, status codes, errors.

A gRPC message on a stream's DATA is a 5-byte prefix (compressed flag, big-endian
length) and the message. `MessageReader` gives whole messages only, bounded; a
compressed one is refused (the guard cannot read it, so it is not forwarded).
"""

from __future__ import annotations

from dataclasses import dataclass
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


def frame(payload: bytes) -> bytes:
    """One uncompressed gRPC message with its prefix."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


@dataclass(slots=True)
class MessageReader:
    """Bytes of one direction of one stream in, whole message payloads out."""

    max_message: int = MAX_MESSAGE
    _buffer: bytearray | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self._buffer is None:
            self._buffer = bytearray()
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        while len(buffer) >= PREFIX:
            flag = buffer[0]
            size = int.from_bytes(buffer[1:PREFIX], "big")
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
            if len(buffer) < PREFIX + size:
                break
            out.append(bytes(buffer[PREFIX : PREFIX + size]))
            del buffer[: PREFIX + size]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete."""
        return 0 if self._buffer is None else len(self._buffer)


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
