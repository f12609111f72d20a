"""50 up/down cycles leave the engine exactly as it was."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from dindtest_support import Dind

from dockmoat.dind import claimant, naming

CYCLES = 50


def _ours(dind: Dind) -> dict[str, set[str]]:
    """Everything on the engine this test process made (its claimant label) or that
    is named after one of our daemons (other people's daemons may run meanwhile)."""
    label = {"label": f"{naming.LABEL_CLAIMANT}={claimant.current()}"}
    return {
        "containers": {c.name for c in dind.client.containers.list(all=True, filters=label)},
        "networks": {n.name for n in dind.client.networks.list(filters=label)},
        "volumes": {v.name for v in dind.client.volumes.list(filters=label)},
    }


def _named_after(dind: Dind, names: list[str]) -> list[str]:
    found = [c.name for c in dind.client.containers.list(all=True)]
    found += [n.name for n in dind.client.networks.list()]
    found += [v.name for v in dind.client.volumes.list()]
    return [item for item in found if any(name in item for name in names)]


def _everything(dind: Dind) -> dict[str, set[str]]:
    return {
        "containers": {c.id for c in dind.client.containers.list(all=True)},
        "networks": {n.id for n in dind.client.networks.list()},
        "volumes": {v.name for v in dind.client.volumes.list()},
        "images": {i.id for i in dind.client.images.list(all=True)},
    }


@pytest.mark.slow
def test_fifty_up_down_cycles_leave_nothing(dind: Dind, dind_name: Callable[[], str]) -> None:
    ours_before = _ours(dind)
    all_before = _everything(dind)
    mounted: set[str] = set()
    names: list[str] = []
    for _ in range(CYCLES):
        name = dind_name()
        names.append(name)
        info = dind.up(name)
        details = dind.client.api.inspect_container(info.container_id)
        mounted |= {m["Name"] for m in details["Mounts"] if m.get("Type") == "volume"}
        dind.manager.down(name)
    assert _ours(dind) == ours_before
    assert _named_after(dind, names) == []
    all_after = _everything(dind)
    # No volume any of our daemons mounted survives (named or anonymous).
    assert mounted and not (mounted & all_after["volumes"])
    if os.environ.get("CI") == "true":
        # Alone on the engine in CI: the whole engine is exactly as before, images
        # included (dind never pulls or builds on the host). Outside CI other
        # people's work changes these sets, so only our own resources are compared.
        assert all_after == all_before
    assert not any((dind.state_dir / "daemons").iterdir())
    assert not (dind.docker_config / "contexts" / "meta").exists() or not any(
        (dind.docker_config / "contexts" / "meta").iterdir()
    )
