"""Names and labels (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.dind import naming
from dockmoat.errors import ConfigError

NAMES = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", fullmatch=True)


@given(NAMES)
def test_valid_names_roundtrip_through_container_names(name: str) -> None:
    assert naming.validate_name(name) == name
    assert naming.assigned_name("/" + naming.container_name(name)) == name


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "x" * 64, "é", "../x"])
def test_invalid_names(bad: str) -> None:
    with pytest.raises(ValueError):
        naming.validate_name(bad)


@given(NAMES)
def test_instances_are_fresh(name: str) -> None:
    assert naming.new_instance(name) != naming.new_instance(name)
    assert naming.new_instance(name).startswith(name + "-")


def test_temporary_and_pool_containers_are_not_assigned() -> None:
    assert naming.assigned_name(naming.tmp_container_name("x-1")) is None
    assert naming.assigned_name(naming.pool_container_name("pool-1")) is None


@pytest.mark.parametrize("bad", ["", "a b", "../k", "k" * 129])
def test_invalid_cache_keys(bad: str) -> None:
    with pytest.raises(ConfigError):
        naming.validate_cache_key(bad)
