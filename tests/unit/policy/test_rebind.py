"""`rebind`: a create body's bind sources replaced exactly where `bind_sources` reads them."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dockmoat.policy.rules.containers import create_bind_sources, rebind

PINS = {"/ws/a": "/pins/1", "/ws/b": "/pins/2"}


def test_binds_in_both_holders_keep_destination_and_options() -> None:
    body = {
        "Binds": ["/ws/a:/x:ro"],
        "HostConfig": {"Binds": ["/ws/a:/y", "/ws/b:/z:rw,z", "named:/v", "/other:/o"]},
    }
    assert rebind(body, PINS) == {
        "Binds": ["/pins/1:/x:ro"],
        "HostConfig": {"Binds": ["/pins/1:/y", "/pins/2:/z:rw,z", "named:/v", "/other:/o"]},
    }


def test_bind_mounts_only_and_go_spelled_keys() -> None:
    body = {
        "hostconfig": {
            "mounts": [
                {"type": "bind", "source": "/ws/b", "target": "/t"},
                {"Type": "volume", "Source": "/ws/a", "Target": "/v"},
                {"Type": "tmpfs", "Target": "/tmp"},
            ]
        }
    }
    changed = rebind(body, PINS)
    assert changed["hostconfig"]["mounts"][0] == {
        "type": "bind",
        "source": "/pins/2",
        "target": "/t",
    }
    assert changed["hostconfig"]["mounts"][1:] == body["hostconfig"]["mounts"][1:]


def test_the_original_body_is_not_changed() -> None:
    body = {"HostConfig": {"Binds": ["/ws/a:/x"], "Mounts": [{"Type": "bind", "Source": "/ws/b"}]}}
    before = copy.deepcopy(body)
    rebind(body, PINS)
    assert body == before


def test_a_source_that_only_starts_like_a_pinned_one_is_left() -> None:
    body = {"HostConfig": {"Binds": ["/ws/ab:/x", "/ws/a/sub:/y"]}}
    assert rebind(body, PINS) == body


sources = st.sampled_from(["/ws/a", "/ws/b", "/ws/c", "vol"])
binds = st.builds(lambda s, d: f"{s}:/{d}", sources, st.sampled_from(["x", "y:ro"]))
mounts = st.builds(
    lambda s, kind: {"Type": kind, "Source": s, "Target": "/m"},
    st.sampled_from(["/ws/a", "/ws/b", "/ws/c"]),
    st.sampled_from(["bind", "volume"]),
)


@given(st.lists(binds, max_size=4), st.lists(mounts, max_size=3), st.booleans())
def test_rebound_sources_are_the_mapped_ones_in_order(
    bind_list: list[str], mount_list: list[dict[str, Any]], nested: bool
) -> None:
    holder = {"Binds": bind_list, "Mounts": mount_list}
    body: dict[str, Any] = {"HostConfig": holder} if nested else dict(holder)
    before = [source for source, _where in create_bind_sources(body)]
    after = [source for source, _where in create_bind_sources(rebind(body, PINS))]
    assert after == [PINS.get(source, source) for source in before]
