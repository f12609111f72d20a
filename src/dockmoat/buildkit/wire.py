"""Protobuf's wire format, read strictly: fields in, `WireError` for anything else.

Only what the guard needs: varints, length-delimited fields, and skipping the
fixed-size ones. A message is a sequence of (field number, wire type, value);
repeated and map fields are simply several occurrences of the same number. Go's
protobuf decoder keeps the last value of a singular field and every element of a
repeated one; the typed readers in `messages` follow that rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, NamedTuple

VARINT: Final = 0
I64: Final = 1
LEN: Final = 2
I32: Final = 5

MAX_DEPTH: Final = 32
"""Nested messages deeper than this are refused (BuildKit's own are at most ~6 deep)."""


class WireError(ValueError):
    """Bytes that are not a protobuf message of the expected shape."""


class Field(NamedTuple):
    number: int
    wire_type: int
    value: int | bytes


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position); at most 10 bytes, as protobuf allows."""
    result = 0
    shift = 0
    for i in range(10):
        if pos + i >= len(data):
            raise WireError("truncated varint")
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 1 << 64:
                raise WireError("varint larger than 64 bits")
            return result, pos + i + 1
        shift += 7
    raise WireError("varint longer than 10 bytes")


def fields(data: bytes) -> Iterator[Field]:
    """Every field of one message, in order; WireError on any malformed byte."""
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number = key >> 3
        wire_type = key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise WireError(f"field number {number} out of range")
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
            yield Field(number, wire_type, value)
        elif wire_type == LEN:
            size, pos = read_varint(data, pos)
            if size > end - pos:
                raise WireError("length-delimited field runs past the message")
            yield Field(number, wire_type, data[pos : pos + size])
            pos += size
        elif wire_type == I64:
            if pos + 8 > end:
                raise WireError("truncated 64-bit field")
            yield Field(number, wire_type, int.from_bytes(data[pos : pos + 8], "little"))
            pos += 8
        elif wire_type == I32:
            if pos + 4 > end:
                raise WireError("truncated 32-bit field")
            yield Field(number, wire_type, int.from_bytes(data[pos : pos + 4], "little"))
            pos += 4
        else:
            raise WireError(f"wire type {wire_type} (groups) not accepted")


def as_bytes(item: Field) -> bytes:
    if item.wire_type != LEN or not isinstance(item.value, bytes):
        raise WireError(f"field {item.number} must be length-delimited")
    return item.value


def as_text(item: Field) -> str:
    try:
        return as_bytes(item).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"field {item.number} is not valid UTF-8") from None


def as_int(item: Field) -> int:
    if item.wire_type != VARINT or not isinstance(item.value, int):
        raise WireError(f"field {item.number} must be a varint")
    return item.value


def as_enum(item: Field) -> int:
    """An enum (an int32 to Go): the varint's low 32 bits, signed. `1 | 1 << 32` is 1
    to the daemon, and must be 1 here too."""
    value = as_int(item) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def as_int64(item: Field) -> int:
    """An int64: the varint as two's complement (-1 is ten bytes on the wire)."""
    value = as_int(item)
    return value - (1 << 64) if value >= 1 << 63 else value


def as_bool(item: Field) -> bool:
    return as_int(item) != 0


def string_map_entry(data: bytes) -> tuple[str, str]:
    """One entry of a `map<string, string>` (key 1, value 2; last one wins)."""
    key = ""
    value = ""
    for item in fields(data):
        if item.number == 1:
            key = as_text(item)
        elif item.number == 2:
            value = as_text(item)
    return key, value


def bytes_map_entry(data: bytes) -> tuple[str, bytes]:
    """One entry of a `map<string, Message>`: the key and the value's raw bytes."""
    key = ""
    value = b""
    for item in fields(data):
        if item.number == 1:
            key = as_text(item)
        elif item.number == 2:
            value = as_bytes(item)
    return key, value


# --- writing (only what the guard adds to a message) ----------------------------------


def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative varint")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


def string_map_field(number: int, key: str, value: str) -> bytes:
    """A map<string, string> entry as field `number`; appended, it overrides an earlier key."""
    entry = len_field(1, key.encode()) + len_field(2, value.encode())
    return len_field(number, entry)
