"""memo_short: memoises short keys, computes long ones each time (a memory bound)."""

from __future__ import annotations

from dockmoat.api.memo import memo_short


def test_short_keys_are_memoised_long_ones_are_not() -> None:
    calls: list[str] = []

    @memo_short(8, longest=4)
    def upper(text: str) -> str:
        calls.append(text)
        return text.upper()

    assert [upper("abcd"), upper("abcd")] == ["ABCD", "ABCD"]
    assert calls == ["abcd"]
    assert [upper("abcde"), upper("abcde")] == ["ABCDE", "ABCDE"]
    assert calls == ["abcd", "abcde", "abcde"]


def test_the_bound_is_on_the_last_argument() -> None:
    calls: list[tuple[str, str]] = []

    @memo_short(8, longest=2)
    def pair(method: str, path: str) -> str:
        calls.append((method, path))
        return method + path

    assert pair("a-long-method", "/x") == pair("a-long-method", "/x") == "a-long-method/x"
    assert len(calls) == 1
