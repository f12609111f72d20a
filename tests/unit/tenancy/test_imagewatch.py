"""The kept image listing's state (`ListingCache`), the events stream's line splitter
(`EventLines`) and the follower's clock check (tenancy/imagewatch.py)."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from dockmoat.tenancy.imagewatch import (
    EventLines,
    ListingCache,
    changes_images,
    daemon_clock_skew,
)

ACTIONS = ["pull", "tag", "untag", "delete", "import", "load", "create", "prune", "save", "push"]
HARMLESS = {"save", "push"}


def _line(action: str) -> bytes:
    return json.dumps({"Type": "image", "Action": action, "Actor": {"ID": "sha256:1"}}).encode()


# --- ListingCache: a model-based property ---------------------------------------

STEPS = st.lists(
    st.one_of(
        st.just(("ask",)),
        st.tuples(st.just("answer"), st.integers(0, 5)),  # the answer to the n-th last ask
        st.just(("changed",)),
        st.just(("start",)),
        st.just(("end",)),
    ),
    max_size=60,
)


@given(STEPS)
def test_a_kept_listing_was_asked_for_after_the_last_change_while_followed(
    steps: list[tuple[object, ...]],
) -> None:
    cache: ListingCache[int] = ListingCache()
    # (generation asked in, value); a listing's value is the step it was asked at.
    asked: list[tuple[int, int]] = []
    last_change = 0  # the model: the step of the last change (event, start, end)
    for clock, step in enumerate(steps, start=1):
        if step[0] == "ask":
            asked.append((cache.generation, clock))
        elif step[0] == "answer" and asked:
            generation, value = asked.pop(-1 - min(int(str(step[1])), len(asked) - 1))
            cache.store(generation, value)
        elif step[0] == "changed":
            cache.changed()
            last_change = clock
        elif step[0] == "start":
            cache.follow_started()
            last_change = clock
        elif step[0] == "end":
            cache.follow_ended()
            last_change = clock
        kept = cache.cached()
        if kept is not None:
            # Only while followed, and only a listing asked after the last change.
            assert cache.following
            assert kept > last_change


def test_nothing_is_kept_while_not_followed() -> None:
    cache: ListingCache[str] = ListingCache()
    assert not cache.store(cache.generation, "listing")
    assert cache.cached() is None
    cache.follow_started()
    assert cache.store(cache.generation, "listing") and cache.cached() == "listing"
    cache.follow_ended()
    assert cache.cached() is None
    cache.follow_started()
    assert cache.cached() is None  # what was kept before is gone for good


# --- EventLines ---------------------------------------------------------------


@given(
    st.lists(st.sampled_from(ACTIONS), max_size=8),
    st.lists(st.integers(0, 400), max_size=6),
)
def test_any_split_of_the_stream_reports_a_change_iff_a_changing_event_completed(
    actions: list[str], cuts: list[int]
) -> None:
    stream = b"".join(_line(action) + b"\n" for action in actions)
    lines = EventLines()
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    changed = False
    for start, end in itertools.pairwise(points):
        changed = lines.feed(stream[start:end]) or changed
    assert changed == any(action not in HARMLESS for action in actions)


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_any_bytes_are_read_without_error_and_a_complete_line_of_them_is_a_change(
    data: bytes, cuts: list[int]
) -> None:
    lines = EventLines(max_line=64)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    changed = False
    for start, end in itertools.pairwise(points):
        changed = lines.feed(data[start:end]) or changed
    readable = [part for part in data.split(b"\n")[:-1] if part.strip()]
    if any(changes_images(part) for part in readable):
        assert changed


def test_a_line_longer_than_the_bound_is_a_change_and_skipped_to_its_end() -> None:
    lines = EventLines(max_line=16)
    assert lines.feed(b'{"Type":"image","Action":"save"' + b" " * 40)  # too long: a change
    assert not lines.feed(b"}\n")  # its end: nothing more
    assert not lines.feed(_line("save") + b"\n")  # the next line is read again
    assert len(lines._partial) == 0


def test_unreadable_and_unknown_events_are_changes() -> None:
    assert changes_images(b"not json")
    assert changes_images(b"[1]")
    assert changes_images(_line("some-future-action"))
    assert not changes_images(_line("save"))
    assert not changes_images(b'{"status":"push","id":"x"}')  # an old engine's spelling


def test_the_daemons_clock_is_read_from_its_date_header() -> None:
    assert daemon_clock_skew(None, 0.0) is None
    assert daemon_clock_skew("garbage", 0.0) is None
    skew = daemon_clock_skew("Tue, 08 Dec 2026 01:00:10 GMT", 1796691600.0)
    assert skew == 10.0
