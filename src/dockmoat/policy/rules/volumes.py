"""Rules on volumes: local-driver options that mount host paths, and volume drivers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dockmoat.policy.decision import Decision
from dockmoat.policy.rules.base import (
    ALLOW,
    Rule,
    Subject,
    deny,
    host_configs,
    obj,
    objects,
    present,
    string_map,
    text,
    top,
)
from dockmoat.policy.rules.containers import SERVICES, service_spec

CREATE_VOLUME = frozenset({"volumes.create"})
ROUTES = CREATE_VOLUME | frozenset({"containers.create"}) | SERVICES
LOCAL_DRIVERS = frozenset({"", "local"})


def local_options_problem(options: Mapping[str, str]) -> str | None:
    """Why local-driver options reach the host, or None.

    The local driver mounts `device` with `type` and `o` when they are set; only a
    tmpfs (memory, no host source) is harmless. `o=bind` binds any host folder.
    """
    kind = options.get("type")
    device = options.get("device")
    mount_opts = [item.strip().lower() for item in options.get("o", "").split(",")]
    if any(item in ("bind", "rbind") for item in mount_opts):
        return "o=bind, which binds a host folder"
    if kind is None and device is None:
        return None
    if kind == "tmpfs":
        return None
    return f"type={kind or ''} device={device or ''}, which mounts a host device or share"


def volume_specs(subject: Subject) -> Iterator[tuple[str, Mapping[str, str], str]]:
    """(driver, options, where) of every volume a request creates."""
    if subject.route in CREATE_VOLUME:
        body = top(subject)
        yield (
            text(body, "Driver", "") or "",
            string_map(body, "DriverOpts", ""),
            "DriverOpts",
        )
        return
    if subject.route in SERVICES:
        holders = [(service_spec(subject) or {}, "TaskTemplate.ContainerSpec.")]
    else:
        holders = list(host_configs(subject))
    for holder, where in holders:
        default_driver = text(holder, "VolumeDriver", where) or ""
        if default_driver:
            yield default_driver, {}, f"{where}VolumeDriver"
        for mount in objects(holder, "Mounts", where):
            if text(mount, "Type", f"{where}Mounts[].") != "volume":
                continue
            options = obj(mount, "VolumeOptions", f"{where}Mounts[].") or {}
            config = obj(options, "DriverConfig", f"{where}Mounts[].VolumeOptions.") or {}
            place = f"{where}Mounts[].VolumeOptions.DriverConfig"
            yield (
                text(config, "Name", place + ".") or "",
                string_map(config, "Options", place + "."),
                place,
            )


def check_host_path(subject: Subject) -> Decision:
    for driver, options, where in volume_specs(subject):
        if driver not in LOCAL_DRIVERS:
            continue
        problem = local_options_problem(options)
        if problem is not None:
            return deny(
                "volumes.host-path",
                f"a local volume with {problem} ({where})",
                "Create plain volumes, or tmpfs volumes (type=tmpfs device=tmpfs)",
            )
    return ALLOW


def check_driver(subject: Subject) -> Decision:
    for driver, _, where in volume_specs(subject):
        if driver not in LOCAL_DRIVERS:
            return deny(
                "volumes.driver",
                f"the volume driver {driver!r} ({where})",
                "Use the local volume driver",
            )
    return ALLOW


def check_cluster(subject: Subject) -> Decision:
    """Cluster (CSI) volumes: a `ClusterVolumeSpec` on create, any `PUT /volumes/{name}`."""
    if subject.route == "volumes.update" or present(top(subject), "ClusterVolumeSpec"):
        return deny(
            "volumes.cluster",
            f"a swarm cluster volume ({subject.request.method} {subject.request.path})",
            "Create plain local volumes",
        )
    return ALLOW


RULES: tuple[Rule, ...] = (
    Rule(
        "volumes.host-path",
        "volumes",
        ROUTES,
        "Local volumes with bind or device options mount host folders and disks.",
        check_host_path,
    ),
    Rule(
        "volumes.driver",
        "volumes",
        ROUTES,
        "Volume plugins run with host privileges and mount what they like.",
        check_driver,
    ),
    Rule(
        "volumes.cluster",
        "volumes",
        frozenset({"volumes.create", "volumes.update"}),
        "Cluster volumes are swarm objects run by CSI plugins with host privileges.",
        check_cluster,
    ),
)
