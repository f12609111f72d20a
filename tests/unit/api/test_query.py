"""Query and form parsing with Go's net/url rules."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.query import (
    encode_query,
    go_bool,
    go_unescape,
    media_type,
    merge_form,
    parse_query,
)
from dockmoat.errors import ProtocolError


def test_basic_and_duplicates_keep_order() -> None:
    assert parse_query("a=1&a=2&B=3") == {"a": ["1", "2"], "B": ["3"]}


def test_plus_and_escapes() -> None:
    assert parse_query("t=a+b%2Bc&k%3D=v") == {"t": ["a b+c"], "k=": ["v"]}


def test_empty_pairs_and_missing_values() -> None:
    assert parse_query("&&a&b=&=c") == {"a": [""], "b": [""], "": ["c"]}


@pytest.mark.parametrize("raw", ["a=1;b=2", "a;=1", "a=%zz", "a=%4", "%=1"])
def test_refused(raw: str) -> None:
    with pytest.raises(ProtocolError):
        parse_query(raw)


def test_non_utf8_is_kept_losslessly() -> None:
    values = parse_query("a=%FF")
    assert values["a"][0].encode("utf-8", "surrogateescape") == b"\xff"


def test_form_body_values_come_first() -> None:
    merged = merge_form({"force": ["0"]}, {"force": ["1"], "v": ["1"]})
    assert merged == {"force": ["0", "1"], "v": ["1"]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False), ("", False), ("0", False), ("no", False), ("FALSE", False),
        (" None ", False), ("1", True), ("true", True), ("yes", True), ("2", True),
        ("\x1cfalse", True), ("\u3000no", False), ("off", True),
    ],
)  # fmt: skip
def test_go_bool(value: str | None, expected: bool) -> None:
    assert go_bool(value) is expected


def test_media_type() -> None:
    assert media_type("Application/X-WWW-Form-Urlencoded; charset=x") == (
        "application/x-www-form-urlencoded"
    )
    assert media_type(None) == "application/octet-stream"


@given(st.dictionaries(st.text(), st.lists(st.text(), min_size=1), max_size=5))
def test_encode_roundtrip(values: dict[str, list[str]]) -> None:
    assert parse_query(encode_query(values)) == {k: v for k, v in values.items()}


@given(st.text())
def test_never_crashes(raw: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_query(raw)


def _go_unescape_spec(raw: str, plus_is_space: bool) -> str | None:
    """Go's `unescape`, transcribed byte by byte (net/url/url.go); None: an error."""
    data = raw.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x25:
            pair = data[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in pair):
                return None
            out.append(int(pair, 16))
            i += 3
            continue
        out.append(0x20 if data[i] == 0x2B and plus_is_space else data[i])
        i += 1
    return out.decode("utf-8", "surrogateescape")


_QUERYISH = st.text(alphabet="%+;&=aF0g9 \xff\u00e9", max_size=24)


@given(_QUERYISH, st.booleans())
def test_unescape_matches_go(raw: str, plus_is_space: bool) -> None:
    expected = _go_unescape_spec(raw, plus_is_space)
    if expected is None:
        with pytest.raises(ProtocolError):
            go_unescape(raw, plus_is_space=plus_is_space, where="query")
    else:
        assert go_unescape(raw, plus_is_space=plus_is_space, where="query") == expected


@given(_QUERYISH)
def test_query_matches_go(raw: str) -> None:
    """Both the plain split and the unescaping path read a query as Go does."""
    pairs = [pair.partition("=") for pair in raw.split("&") if pair]
    keys_values = [
        (_go_unescape_spec(key, True), _go_unescape_spec(value, True)) for key, _s, value in pairs
    ]
    refused = ";" in raw or any(k is None or v is None for k, v in keys_values)
    if refused:
        with pytest.raises(ProtocolError):
            parse_query(raw)
        return
    expected: dict[str, list[str]] = {}
    for key, value in keys_values:
        assert key is not None and value is not None
        expected.setdefault(key, []).append(value)
    assert parse_query(raw) == expected
