"""Kubernetes pod specs, wherever CI files embed them, as format-neutral containers.

Read: `containers`, `initContainers`, `ephemeralContainers` (image, command + args,
`securityContext.privileged`, env, `volumeMounts` of `hostPath` volumes, limits, probes,
`hostPort`), and the pod's `hostNetwork`, `hostPID`, `hostIPC`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dockmoat.ci.audit import rules
from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.findings import Hit
from dockmoat.ci.audit.images import Role
from dockmoat.ci.audit.model import Container, Located
from dockmoat.ci.audit.mounts import Mount

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def pod_containers(spec: Any, label: str, line: int) -> list[Container]:
    """The containers of one pod spec (a mapping); `label` names the pod in messages."""
    pod = y.mapping(spec)
    if pod is None:
        return []
    host_paths = _host_paths(pod, line)
    shared = {
        "network": _host_flag(pod, "hostNetwork", line),
        "pid": _host_flag(pod, "hostPID", line),
        "ipc": _host_flag(pod, "hostIPC", line),
    }
    out: list[Container] = []
    for key in _CONTAINER_LISTS:
        items = y.sequence(pod.get(key))
        if items is None:
            continue
        base = y.key_line(pod, key, line)
        for i, item in enumerate(items):
            spec_map = y.mapping(item)
            if spec_map is not None:
                item_line = y.item_line(items, i, base)
                out.append(_container(spec_map, label, item_line, host_paths, shared))
    return out


def limit_hits(containers: list[Container]) -> Iterator[Hit]:
    """`pod-no-limits` for the containers that are not DinD daemons (those have their rule)."""
    for c in containers:
        if c.limits is None or c.role is Role.DIND:
            continue
        missing = [k for k in ("memory", "cpus") if k not in c.limits]
        if missing:
            yield Hit(
                rules.POD_NO_LIMITS,
                c.line,
                f"{c.label}: no {' or '.join('cpu' if m == 'cpus' else m for m in missing)} limit",
            )


def _host_flag(pod: Any, key: str, line: int) -> Located | None:
    if pod.get(key) is True or str(pod.get(key)).lower() == "true":
        return Located("host", y.key_line(pod, key, line))
    return None


def _host_paths(pod: Any, line: int) -> dict[str, tuple[str, int]]:
    """Volume name -> (hostPath path, line of the volume)."""
    out: dict[str, tuple[str, int]] = {}
    base = y.key_line(pod, "volumes", line)
    for item, item_line in y.items(pod.get("volumes"), base):
        volume = y.mapping(item)
        host = y.mapping(volume.get("hostPath")) if volume is not None else None
        path = y.scalar_str(host.get("path")) if host is not None else None
        name = y.scalar_str(volume.get("name")) if volume is not None else None
        if name and path:
            out[name] = (path, item_line)
    return out


def _container(
    spec: Any,
    label: str,
    line: int,
    host_paths: dict[str, tuple[str, int]],
    shared: dict[str, Located | None],
) -> Container:
    name = y.scalar_str(spec.get("name")) or "?"
    image = y.scalar_str(spec.get("image"))
    security = y.mapping(spec.get("securityContext"))
    privileged = security is not None and (
        security.get("privileged") is True or str(security.get("privileged")).lower() == "true"
    )
    return Container(
        label=f"{label} container {name!r}",
        line=line,
        image=Located(image, y.value_line(spec, "image", line)) if image else None,
        command=_words(spec.get("command")) + _words(spec.get("args")),
        command_line=y.key_line(spec, "args", y.key_line(spec, "command", line)),
        privileged_line=y.key_line(security, "privileged", line) if privileged else None,
        env=_env(spec.get("env"), line),
        mounts=list(_mounts(spec, line, host_paths)),
        network=shared["network"],
        pid=shared["pid"],
        ipc=shared["ipc"],
        ports=_host_ports(spec, line),
        limits=_limits(spec),
        health=any(spec.get(p) is not None for p in _PROBES),
    )


def _words(node: Any) -> list[str]:
    seq = y.sequence(node)
    if seq is not None:
        return [str(w) for w in seq]
    text = y.scalar_str(node)
    return [text] if text else []


def _env(node: Any, line: int) -> dict[str, Located]:
    out: dict[str, Located] = {}
    for item, item_line in y.items(node, line):
        entry = y.mapping(item)
        if entry is None:
            continue
        name = y.scalar_str(entry.get("name"))
        value = y.scalar_str(entry.get("value"))
        if name and value is not None:
            out[name] = Located(value, item_line)
    return out


def _mounts(spec: Any, line: int, host_paths: dict[str, tuple[str, int]]) -> Iterator[Mount]:
    base = y.key_line(spec, "volumeMounts", line)
    for item, item_line in y.items(spec.get("volumeMounts"), base):
        mount = y.mapping(item)
        name = y.scalar_str(mount.get("name")) if mount is not None else None
        if mount is None or name not in host_paths:
            continue
        path, _ = host_paths[name]
        yield Mount(
            source=path,
            target=y.scalar_str(mount.get("mountPath")) or "",
            read_only=mount.get("readOnly") is True,
            line=item_line,
        )


def _host_ports(spec: Any, line: int) -> list[Located]:
    out: list[Located] = []
    base = y.key_line(spec, "ports", line)
    for item, item_line in y.items(spec.get("ports"), base):
        port = y.mapping(item)
        if port is None or port.get("hostPort") is None:
            continue
        host_ip = y.scalar_str(port.get("hostIP"))
        container = y.scalar_str(port.get("containerPort")) or ""
        text = f"{y.scalar_str(port.get('hostPort'))}:{container}"
        out.append(Located(f"{host_ip}:{text}" if host_ip else text, item_line))
    return out


def _limits(spec: Any) -> set[str]:
    resources = y.mapping(spec.get("resources"))
    limits = y.mapping(resources.get("limits")) if resources is not None else None
    # Kubernetes limits PIDs per node or pod, not per container: never missing here.
    found = {"pids"}
    if limits is not None:
        if limits.get("memory") is not None:
            found.add("memory")
        if limits.get("cpu") is not None:
            found.add("cpus")
    return found
