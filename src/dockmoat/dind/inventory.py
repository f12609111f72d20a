"""The daemons on an engine: look one up (`info`, `logs`), list them, remove one
with everything of its instance (`down`, and `destroy` for a pool's daemon)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker.errors

from dockmoat.dind import context as contexts
from dockmoat.dind import naming
from dockmoat.dind.engine import Engine
from dockmoat.dind.info import DindInfo
from dockmoat.errors import EngineError, NotFoundError, config_errors
from dockmoat.sdkerrors import engine_errors


@dataclass(frozen=True, slots=True)
class DaemonRow:
    """One line of `dind ls`."""

    name: str
    instance: str
    state: str
    created: float
    memory: int | None
    cpus: float | None
    pids_limit: int | None
    cache: str | None
    port: int | None


def destroy(engine: Engine, container: str) -> list[str]:
    """Remove one daemon container and everything of its instance."""
    try:
        details = engine.api.inspect_container(container)
    except docker.errors.NotFound:
        return []
    return remove_instance(engine, details)


def daemon(engine: Engine, name: str) -> dict[str, Any]:
    with config_errors():
        naming.validate_name(name)
    with engine_errors(f"cannot inspect {name}", not_found=f"no dind daemon named {name}"):
        details = engine.api.inspect_container(naming.container_name(name))
    labels = details["Config"]["Labels"] or {}
    if labels.get(naming.LABEL_ROLE) != naming.ROLE_DAEMON:
        raise NotFoundError(f"no dind daemon named {name} (the container is not dockmoat's)")
    return dict(details)


def info(engine: Engine, name: str) -> DindInfo:
    details = daemon(engine, name)
    if details["State"]["Status"] != "running":
        raise EngineError(
            f"dind daemon {name} is {details['State']['Status']}; `dockmoat dind down {name}`"
        )
    return engine.info_from(details, name)


def list_daemons(engine: Engine) -> list[DaemonRow]:
    rows = []
    for item in engine.api.containers(
        all=True, filters={"label": f"{naming.LABEL_ROLE}={naming.ROLE_DAEMON}"}
    ):
        container = str(item["Names"][0]).lstrip("/")
        labels = item.get("Labels") or {}
        instance = labels.get(naming.LABEL_INSTANCE, "?")
        assigned = naming.assigned_name(container)
        if assigned is None:
            label = "(pool)" if container.startswith(naming.POOL_PREFIX) else "(starting)"
            display = f"{label} {instance}"
        else:
            display = assigned
        try:
            host_config = engine.api.inspect_container(item["Id"])["HostConfig"]
        except docker.errors.NotFound:
            continue
        ports = [p.get("PublicPort") for p in item.get("Ports") or [] if p.get("PublicPort")]
        rows.append(
            DaemonRow(
                name=display,
                instance=instance,
                state=str(item.get("State", "?")),
                created=float(item.get("Created", 0)),
                memory=host_config.get("Memory") or None,
                cpus=(host_config.get("NanoCpus") or 0) / 1e9 or None,
                pids_limit=host_config.get("PidsLimit") or None,
                cache=labels.get(naming.LABEL_CACHE),
                port=int(ports[0]) if ports else None,
            )
        )
    return sorted(rows, key=lambda r: r.created)


def logs(
    engine: Engine, name: str, *, follow: bool = False, tail: int | None = None
) -> Iterator[bytes]:
    details = daemon(engine, name)
    stream = engine.api.logs(
        details["Id"], stream=True, follow=follow, tail=tail if tail is not None else "all"
    )
    yield from stream


# ---------------------------------------------------------------- down / gc


def down(engine: Engine, name: str) -> list[str]:
    """Remove NAME's container, network, non-cache volume, certificates and context."""
    details = daemon(engine, name)
    removed = remove_instance(engine, details)
    if contexts.remove(engine.docker_config, naming.context_name(name)):
        removed.append(f"context {naming.context_name(name)}")
    return removed


def remove_instance(engine: Engine, details: dict[str, Any]) -> list[str]:
    labels = details["Config"]["Labels"] or {}
    instance = labels[naming.LABEL_INSTANCE]
    removed = []
    name = str(details["Name"]).lstrip("/")
    try:
        with engine_errors(f"cannot remove {name}", leave=(docker.errors.NotFound,)):
            if labels.get(naming.LABEL_CACHE) and details["State"]["Status"] == "running":
                # A cache outlives this daemon: let dockerd shut down cleanly so the
                # next daemon with the key finds a consistent data root.
                engine.api.stop(details["Id"], timeout=15)
            engine.api.remove_container(details["Id"], force=True, v=True)
        removed.append(f"container {name}")
    except docker.errors.NotFound:
        pass  # already gone
    removed += remove_resources(engine, instance)
    return removed


def remove_resources(engine: Engine, instance: str) -> list[str]:
    removed = []
    network = naming.network_name(instance)
    removed += _remove(f"network {network}", lambda: engine.api.remove_network(network))
    volume = naming.data_volume_name(instance)
    removed += _remove(f"volume {volume}", lambda: engine.api.remove_volume(volume))
    if engine.state.remove_daemon(instance):
        removed.append(f"certificates {engine.state.daemon_dir(instance)}")
    return removed


def _remove(what: str, remove: Callable[[], object]) -> list[str]:
    """[WHAT] once `remove` removed it, [] when it was gone already."""
    try:
        with engine_errors(f"cannot remove {what}", leave=(docker.errors.NotFound,)):
            remove()
    except docker.errors.NotFound:
        return []  # already gone
    return [what]
