"""gojson: decode as Go feeds dockerd's structs, or refuse with a reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.api import gojson
from dockmoat.errors import ProtocolError


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "A": 2}',
        b'{"HostConfig": {}, "hostconfig": {}}',
        b'{"HostConfig": {"Privileged": true}, "HostConfig": {"Memory": 1}}',
        '{"x": {"ss": 1, "ſs": 2}}'.encode(),  # long s folds to s
        '{"k": 1, "\u212a": 2}'.encode(),  # Kelvin sign folds to k
        b'[{"deep": [{"a": 1, "a": 2}]}]',
        b'{"a": 1, "\\u0041": 2}',  # an escaped spelling of the same key
        '{"\u00df": 1, "\u1e9e": 2}'.encode(),  # sharp s and capital sharp s
        '{"\u03c3": 1, "\u03c2": 2}'.encode(),  # sigma and final sigma
    ],
)
def test_keys_that_go_reads_as_one_field_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"same field|repeats the key"):
        gojson.loads(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": 1} {"b": 2}', "after the first value"),
        (b'{"a": 1}x', "after the first value"),
        (b"[NaN]", "not JSON"),
        (b"[Infinity]", "not JSON"),
        (b"[-Infinity]", "not JSON"),
        (b"1e400", "out of range"),
        (b'"\\ud800"', "surrogate"),
        (b'{"\\udc00": 1}', "surrogate"),
        (b'"\xff"', "UTF-8"),
        (b'"\xed\xa0\x80"', "UTF-8"),  # a surrogate encoded in UTF-8
        ("\ufeff{}".encode(), "byte order mark"),
        (b"", "malformed"),
        (b"{'a': 1}", "malformed"),
        (b'{"a": 01}', "malformed"),
        (b'"tab\there"', "malformed"),
        (b"[" * 5000 + b"]" * 5000, "nests deeper"),
    ],
)
def test_what_go_would_read_differently_is_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        gojson.loads(raw)


def test_original_spellings_are_kept_and_field_matches_like_go() -> None:
    value = gojson.loads('{"hostconfig": {"ſecurityOpt": ["x"]}, "Image": "i"} \n'.encode())
    assert list(value) == ["hostconfig", "Image"]
    host = gojson.field(value, "HostConfig")
    assert host == {"ſecurityOpt": ["x"]}
    assert gojson.field(host, "SecurityOpt") == ["x"]
    assert gojson.field_key(host, "SECURITYOPT") == "ſecurityOpt"
    assert gojson.field(value, "Missing") is None
    assert gojson.field(["not", "an", "object"], "x") is None


def test_dotless_and_dotted_i_do_not_fold_in_go() -> None:
    # Go's simple folding leaves U+0130 and U+0131 alone (they are Turkic mappings).
    assert gojson.fold("\u0131") != gojson.fold("i")
    assert gojson.fold("\u0130") != gojson.fold("i")
    assert gojson.loads('{"\u0131d": 1, "id": 2}'.encode()) == {"\u0131d": 1, "id": 2}


def test_dumps_round_trips() -> None:
    body = {"Image": "ü", "HostConfig": {"PidsLimit": 4096}}
    assert gojson.loads(gojson.dumps(body)) == body


# --- properties -------------------------------------------------------------------

_KEYS = st.text(alphabet=st.sampled_from("aAsSkK\u017f\u212a\u00df\u1e9ex_"), max_size=4)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.lists(st.tuples(_KEYS, children), max_size=4)
    ),
    max_leaves=20,
)


def _encode(value: Any) -> str:
    """JSON text that may repeat keys (pairs lists stand for objects)."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        return "{" + ",".join(json.dumps(k) + ":" + _encode(v) for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


def _collides(value: Any) -> bool:
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        folds = [gojson.fold(k) for k, _ in value]
        return len(set(folds)) != len(folds) or any(_collides(v) for _, v in value)
    if isinstance(value, list):
        return any(_collides(v) for v in value)
    return False


@settings(max_examples=400)
@given(_JSON)
def test_parses_like_json_or_refuses_exactly_the_collisions(value: Any) -> None:
    text = _encode(value)
    if _collides(value):
        with pytest.raises(ProtocolError):
            gojson.loads(text.encode())
    else:
        assert gojson.loads(text.encode()) == json.loads(text)


@settings(max_examples=400)
@given(st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
def test_any_bytes_parse_correctly_or_are_refused(raw: bytes) -> None:
    try:
        value = gojson.loads(raw)
    except ProtocolError:
        return
    assert value == json.loads(raw.decode("utf-8"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(json_values)
def test_the_shared_encoders_write_what_json_dumps_writes(value: object) -> None:
    assert gojson.compact(value) == json.dumps(value, separators=(",", ":"))
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert gojson.dumps(value) == expected
