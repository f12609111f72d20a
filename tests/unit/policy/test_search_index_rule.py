"""images.registry-address also covers `GET /images/search`, whose term names an index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockmoat.policy.decision import Allow, Deny
from dockmoat.policy.rules.images import search_index

Decide = Callable[..., Any]


@pytest.mark.parametrize(
    ("term", "index"),
    [
        ("busybox", None),
        ("library/busybox", None),
        ("127.0.0.1:5000", None),  # no slash: dockerd searches Docker Hub for it
        ("127.0.0.1:5000/x", "127.0.0.1:5000"),
        ("localhost/x/y", "localhost"),
        ("169.254.169.254/", "169.254.169.254"),
        ("a@127.0.0.1/x", "a@127.0.0.1"),
    ],
)
def test_search_index_is_read_as_dockerd_reads_it(term: str, index: str | None) -> None:
    assert search_index(term) == index


@pytest.mark.parametrize(
    "term", ["127.0.0.1:5000/x", "localhost/x", "127.1/x", "169.254.169.254/x", "[::1]:5000/x"]
)
def test_search_on_an_internal_index_is_refused(term: str, decide: Decide) -> None:
    decision = decide("GET", f"/v1.41/images/search?term={term}")
    assert isinstance(decision, Deny)
    assert decision.rule == "images.registry-address"


@pytest.mark.parametrize("term", ["busybox", "myorg/app", "quay.io/x"])
def test_public_search_is_allowed(term: str, decide: Decide) -> None:
    assert isinstance(decide("GET", f"/v1.41/images/search?term={term}"), Allow)
