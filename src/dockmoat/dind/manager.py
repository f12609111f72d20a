"""Nested daemons on a Docker engine: `DindManager`, the one object `dockmoat dind`
and `dockmoat run --mode dind` hold, over the modules that do the work:

    launch.py     starting a daemon (`up`; `launch_warm` and `assign` for a pool)
    resources.py  its network, volume and container, and their removal on failure
    preload.py    streaming host images into a daemon
    inventory.py  looking daemons up, listing them, removing one (`down`, `destroy`)
    gc.py         removing what crashed runs left
    diagnose.py   the log lines and hints of a daemon that did not come up
    acquire.py    a warm daemon from a pool when one fits, else a cold `up`

`with DindManager(host=...) as manager:` closes the SDK client on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

import docker

from dockmoat.dind import gc, inventory, launch, preload, resources, spec
from dockmoat.dind.engine import Engine, engine_client
from dockmoat.dind.info import DindInfo
from dockmoat.dind.inventory import DaemonRow
from dockmoat.errors import DockmoatError


class DindManager(Engine):
    """Starts, lists and removes nested daemons on one engine; state in one state directory."""

    def __enter__(self) -> DindManager:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def up(
        self,
        name: str,
        options: spec.DindOptions,
        *,
        wait_cache: float = 0.0,
        pull: bool = False,
    ) -> DindInfo:
        """Start a fresh nested daemon for NAME; return once it answers /_ping over mTLS."""
        return launch.up(self, name, options, wait_cache=wait_cache, pull=pull)

    def check_images(self, options: spec.DindOptions, *, pull: bool = False) -> list[str]:
        return launch.check_images(self, options, pull=pull)

    def host_mtu(self) -> int:
        return resources.host_mtu(self)

    def wait_ready(self, info: DindInfo, container: str, timeout: float) -> None:
        launch.wait_ready(self, info, container, timeout)

    def launch_warm(
        self, options: spec.DindOptions, who: str, pool_id: str
    ) -> tuple[str, DindInfo]:
        return launch.launch_warm(self, options, who, pool_id)

    def assign(self, container: str, name: str, warm: DindInfo | None = None) -> DindInfo:
        return launch.assign(self, container, name, warm)

    def destroy(self, container: str) -> list[str]:
        return inventory.destroy(self, container)

    def nested_client(self, info: DindInfo) -> docker.APIClient:
        return preload.nested_client(info)

    def preload(self, info: DindInfo, images: tuple[str, ...] | list[str]) -> None:
        preload.preload(self, info, images)

    def info(self, name: str) -> DindInfo:
        return inventory.info(self, name)

    def list_daemons(self) -> list[DaemonRow]:
        return inventory.list_daemons(self)

    def logs(self, name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[bytes]:
        return inventory.logs(self, name, follow=follow, tail=tail)

    def down(self, name: str) -> list[str]:
        """Remove NAME's container, network, non-cache volume, certificates and context."""
        return inventory.down(self, name)

    def gc(self) -> list[str]:
        """Remove what crashed runs left: only resources whose daemon is provably gone."""
        return gc.gc(self)


__all__ = ["DaemonRow", "DindInfo", "DindManager", "DockmoatError", "engine_client"]
