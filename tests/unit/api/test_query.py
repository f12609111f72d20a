"""Query and form parsing with Go's net/url rules."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.query import encode_query, go_bool, media_type, merge_form, parse_query
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
