"""Exclusive use of a cache key: two live daemons never share one data root.

`up` returns while its daemon lives on, so no process can hold a lock for the
daemon's lifetime. Ownership is therefore the *existence of a live daemon
container labelled with the key*; the flock in the state directory only makes
"check that no live holder exists, then create ours" atomic among managers
sharing that state directory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from dockmoat.dind import claimant, naming
from dockmoat.dind.state import StateDir
from dockmoat.errors import EngineError

_RETRY = 0.25


class CacheBusy(EngineError):
    """The key's volume carries a live daemon (and the wait, if any, ran out)."""

    def __init__(self, key: str, holder: str) -> None:
        super().__init__(
            f"cache key {key} is in use by {holder}; a data root is never shared: "
            f"wait for it (--wait-cache SECONDS) or use another key"
        )
        self.key = key
        self.holder = holder


def live_holder(containers: list[dict[str, Any]]) -> str | None:
    """The name of a container still owning the key, from `GET /containers/json` items."""
    for item in containers:
        state = str(item.get("State", ""))
        labels = item.get("Labels") or {}
        name = str((item.get("Names") or ["?"])[0]).lstrip("/")
        if state in ("running", "restarting", "paused", "removing"):
            return name
        if state == "created" and not claimant.provably_dead(labels.get(naming.LABEL_CLAIMANT)):
            return name  # an `up` between create and start
    return None


@contextlib.contextmanager
def claim(
    state: StateDir,
    api: Any,
    key: str,
    wait: float,
    progress: Callable[[str], None],
) -> Iterator[None]:
    """Hold the key while the block creates the daemon container; wait up to `wait` seconds.

    CacheBusy when a live daemon still holds the key after the wait.
    """
    deadline = time.monotonic() + max(wait, 0.0)
    told = False
    while True:
        with state.locked(f"cache-{key}"):
            holders = api.containers(all=True, filters={"label": f"{naming.LABEL_CACHE}={key}"})
            holder = live_holder(holders)
            if holder is None:
                yield
                return
        if time.monotonic() >= deadline:
            raise CacheBusy(key, holder)
        if not told:
            progress(f"cache key {key} is in use by {holder}; waiting")
            told = True
        time.sleep(_RETRY)
