"""system.checkpoints: CRIU checkpoint endpoints and start-from-checkpoint are closed.

dockerd 20.10 answers these only when experimental ("checkpoint is only supported
in experimental mode" on this engine), so there is no engine test; on an
experimental daemon `checkpoint-dir`/`dir`/`CheckpointDir` name host folders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockmoat.policy.decision import Allow, Deny

Decide = Callable[..., Any]

REFUSED = [
    ("POST", "/v1.41/containers/abc/start?checkpoint=a&checkpoint-dir=/etc", None),
    ("POST", "/v1.41/containers/abc/start?checkpoint=a", None),
    ("POST", "/containers/abc/start?checkpoint-dir=/tmp", None),
    ("POST", "/v1.41/containers/abc/checkpoints", {"CheckpointID": "a", "CheckpointDir": "/etc"}),
    ("GET", "/v1.41/containers/abc/checkpoints?dir=/etc", None),
    ("DELETE", "/v1.41/containers/abc/checkpoints/a?dir=/etc", None),
]


@pytest.mark.parametrize(("method", "target", "body"), REFUSED)
def test_checkpoints_are_refused(method: str, target: str, body: object, decide: Decide) -> None:
    decision = decide(method, target, body)
    assert isinstance(decision, Deny)
    assert decision.rule == "system.checkpoints"


@pytest.mark.parametrize(
    "target",
    ["/v1.41/containers/abc/start", "/v1.41/containers/abc/start?checkpoint=&x=1"],
)
def test_plain_start_is_allowed(target: str, decide: Decide) -> None:
    assert isinstance(decide("POST", target), Allow)
