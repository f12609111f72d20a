"""`dind gc`: remove what crashed runs left, only resources whose daemon is provably
gone (containers, networks, data volumes, certificates, docker contexts)."""

from __future__ import annotations

import contextlib
import datetime
import time

import docker.errors

from dockmoat.dind import claimant, naming
from dockmoat.dind import context as contexts
from dockmoat.dind.engine import Engine

# A half-made daemon whose claimant cannot be judged is left this long to finish.
GC_GRACE = 600.0


def gc(engine: Engine) -> list[str]:
    """Remove what crashed runs left: only resources whose daemon is provably gone."""
    removed: list[str] = []
    now = time.time()
    live: set[str] = set()
    gone: set[str] = set()
    assigned: set[str] = set()
    items = engine.api.containers(
        all=True, filters={"label": f"{naming.LABEL_ROLE}={naming.ROLE_DAEMON}"}
    )
    for item in items:
        container = str(item["Names"][0]).lstrip("/")
        labels = item.get("Labels") or {}
        instance = labels.get(naming.LABEL_INSTANCE, "")
        state = str(item.get("State", ""))
        age = now - float(item.get("Created", now))
        stopped = state in ("exited", "dead")
        if naming.assigned_name(container) is not None:
            dead = stopped
        else:
            # Half-started by `up`, or warm in a pool: gone when its claimant
            # (the `up` or pool process) provably died, or stopped long ago.
            dead = claimant.provably_dead(labels.get(naming.LABEL_CLAIMANT)) or (
                stopped and age > GC_GRACE
            )
        if dead:
            with contextlib.suppress(docker.errors.NotFound):
                engine.api.remove_container(item["Id"], force=True, v=True)
                removed.append(f"container {container}")
            gone.add(instance)
        else:
            live.add(instance)
            name = naming.assigned_name(container)
            if name:
                assigned.add(name)

    def orphaned(instance: str, who: str | None, created: float) -> bool:
        if instance in live:
            return False
        return instance in gone or claimant.provably_dead(who) or now - created > GC_GRACE

    for net in engine.api.networks(filters={"label": f"{naming.LABEL_ROLE}={naming.ROLE_NETWORK}"}):
        labels = net.get("Labels") or {}
        instance = labels.get(naming.LABEL_INSTANCE, "")
        if orphaned(
            instance, labels.get(naming.LABEL_CLAIMANT), timestamp(net.get("Created"), now)
        ):
            with contextlib.suppress(docker.errors.NotFound):
                engine.api.remove_network(net["Id"])
                removed.append(f"network {net['Name']}")
    volumes = (
        engine.api.volumes(filters={"label": f"{naming.LABEL_ROLE}={naming.ROLE_DATA}"}).get(
            "Volumes"
        )
        or []
    )
    for vol in volumes:
        labels = vol.get("Labels") or {}
        instance = labels.get(naming.LABEL_INSTANCE, "")
        if orphaned(
            instance, labels.get(naming.LABEL_CLAIMANT), timestamp(vol.get("CreatedAt"), now)
        ):
            try:
                engine.api.remove_volume(vol["Name"])
                removed.append(f"volume {vol['Name']}")
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                pass  # still mounted by a container gc may not touch
    other_engines: set[str] = set()
    for instance in engine.state.instances():
        recorded = engine.state.engine_of(instance)
        if recorded and recorded != engine.engine:
            other_engines.add(instance)  # its daemon lives on an engine we do not see
            continue
        directory = engine.state.daemon_dir(instance)
        created = directory.stat().st_mtime if directory.exists() else now
        if orphaned(
            instance, engine.state.claimant_of(instance), created
        ) and engine.state.remove_daemon(instance):
            removed.append(f"certificates {directory}")
    for context_name, instance in contexts.ours(engine.docker_config).items():
        name = context_name[len(naming.CONTEXT_PREFIX) :]
        if name in assigned or instance in live or instance in other_engines:
            continue
        if contexts.remove(engine.docker_config, context_name):
            removed.append(f"context {context_name}")
    return removed


def timestamp(text: object, default: float) -> float:
    if not isinstance(text, str) or not text:
        return default
    try:
        # Docker writes RFC 3339 with nanoseconds; Python wants at most microseconds.
        trimmed = text.replace("Z", "+00:00")
        if "." in trimmed:
            head, _, rest = trimmed.partition(".")
            digits = "".join(c for c in rest if c.isdigit())
            zone = rest[len(digits) :]
            trimmed = f"{head}.{digits[:6]}{zone}"
        return datetime.datetime.fromisoformat(trimmed).timestamp()
    except ValueError:
        return default
