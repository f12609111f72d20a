"""What a tenant reads back: responses and events filtered to it, names without its prefix.

Pure functions on decoded JSON. A list shows only the tenant's resources (and
shared images); every place a name of the tenant's appears is shown without
the name-space prefix, so `docker run --name db` reads back as `db`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockmoat.tenancy.model import (
    PREDEFINED_NETWORKS,
    TENANT_LABEL,
    ImageFacts,
    Owner,
    Tenant,
    label_owner,
)


def _strip_links(links: Any, tenant: Tenant) -> Any:
    # HostConfig.Links in inspect reads "/<container>:/<linker>/<alias>".
    if not isinstance(links, list):
        return links
    out: list[Any] = []
    for link in links:
        if isinstance(link, str):
            out.append(":".join(tenant.namespace.client_path_name(p) for p in link.split(":")))
        else:
            out.append(link)
    return out


def _strip_binds(binds: Any, tenant: Tenant) -> Any:
    if not isinstance(binds, list):
        return binds
    out: list[Any] = []
    for bind in binds:
        if isinstance(bind, str) and ":" in bind and not bind.startswith("/"):
            source, rest = bind.split(":", 1)
            out.append(tenant.namespace.client_name(source) + ":" + rest)
        else:
            out.append(bind)
    return out


def _strip_network_mode(mode: Any, tenant: Tenant) -> Any:
    return tenant.namespace.client_name(mode) if isinstance(mode, str) else mode


def _strip_networks(networks: Any, tenant: Tenant) -> Any:
    if not isinstance(networks, dict):
        return networks
    return {tenant.namespace.client_name(name): value for name, value in networks.items()}


def _strip_mounts(mounts: Any, tenant: Tenant) -> Any:
    if not isinstance(mounts, list):
        return mounts
    out: list[Any] = []
    for mount in mounts:
        if isinstance(mount, dict) and isinstance(mount.get("Name"), str):
            mount = {**mount, "Name": tenant.namespace.client_name(mount["Name"])}
        out.append(mount)
    return out


def present_container(container: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    """A container inspect (or list entry) as the tenant reads it."""
    out = dict(container)
    ns = tenant.namespace
    if isinstance(out.get("Name"), str):
        out["Name"] = ns.client_name(out["Name"])
    if isinstance(out.get("Names"), list):
        out["Names"] = [ns.client_path_name(n) if isinstance(n, str) else n for n in out["Names"]]
    host = out.get("HostConfig")
    if isinstance(host, dict):
        host = dict(host)
        host["NetworkMode"] = _strip_network_mode(host.get("NetworkMode"), tenant)
        if "Links" in host:
            host["Links"] = _strip_links(host.get("Links"), tenant)
        if "Binds" in host:
            host["Binds"] = _strip_binds(host.get("Binds"), tenant)
        out["HostConfig"] = host
    settings = out.get("NetworkSettings")
    if isinstance(settings, dict) and "Networks" in settings:
        out["NetworkSettings"] = {
            **settings,
            "Networks": _strip_networks(settings.get("Networks"), tenant),
        }
    if "Mounts" in out:
        out["Mounts"] = _strip_mounts(out.get("Mounts"), tenant)
    return out


def present_volume(volume: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    out = dict(volume)
    if isinstance(out.get("Name"), str):
        out["Name"] = tenant.namespace.client_name(out["Name"])
    return out


def present_network(network: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    out = dict(network)
    if isinstance(out.get("Name"), str):
        out["Name"] = tenant.namespace.client_name(out["Name"])
    containers = out.get("Containers")
    if isinstance(containers, dict):
        # Only the job can attach containers to its own networks; on a shared one
        # (bridge) another tenant's containers must not show.
        own = label_owner(out.get("Labels")) == tenant.name
        out["Containers"] = {
            cid: {**entry, "Name": tenant.namespace.client_name(str(entry.get("Name", "")))}
            for cid, entry in containers.items()
            if isinstance(entry, dict)
            and (own or tenant.namespace.owns_name(str(entry.get("Name", ""))))
        }
    return out


def present_error(answer: Any, tenant: Tenant) -> Any:
    """dockerd's error message without the job's name-space prefix ("/ci-1--db" -> "/db")."""
    prefix = tenant.namespace.prefix
    if not prefix or not isinstance(answer, dict) or not isinstance(answer.get("message"), str):
        return answer
    message = answer["message"]
    if prefix not in message:
        return answer
    return {**answer, "message": message.replace(prefix, "")}


def volume_mine(volume: Mapping[str, Any], tenant: Tenant, recorded: frozenset[str]) -> bool:
    name = str(volume.get("Name", ""))
    owner = label_owner(volume.get("Labels"))
    if owner is not None:
        return owner == tenant.name
    return tenant.namespace.owns_name(name) or name in recorded


def network_visible(network: Mapping[str, Any], tenant: Tenant) -> bool:
    if network.get("Name") in PREDEFINED_NETWORKS:
        return True
    return label_owner(network.get("Labels")) == tenant.name


def present_container_list(entries: Any, tenant: Tenant) -> list[Any]:
    if not isinstance(entries, list):
        return []
    return [
        present_container(e, tenant)
        for e in entries
        if isinstance(e, dict) and label_owner(e.get("Labels")) == tenant.name
    ]


def present_volume_list(
    answer: Any, tenant: Tenant, recorded: frozenset[str] = frozenset()
) -> dict[str, Any]:
    out: dict[str, Any] = dict(answer) if isinstance(answer, dict) else {}
    volumes = out.get("Volumes") or []
    out["Volumes"] = [
        present_volume(v, tenant)
        for v in volumes
        if isinstance(v, dict) and volume_mine(v, tenant, recorded)
    ]
    out["Warnings"] = out.get("Warnings") or None
    return out


def present_network_list(entries: Any, tenant: Tenant) -> list[Any]:
    if not isinstance(entries, list):
        return []
    return [
        present_network(e, tenant)
        for e in entries
        if isinstance(e, dict) and network_visible(e, tenant)
    ]


def present_image(image: dict[str, Any], facts: ImageFacts) -> dict[str, Any]:
    out = dict(image)
    if isinstance(out.get("RepoTags"), list):
        out["RepoTags"] = facts.visible_tags([str(t) for t in out["RepoTags"]])
    return out


def present_image_list(entries: Any, facts: ImageFacts) -> list[Any]:
    if not isinstance(entries, list):
        return []
    out: list[Any] = []
    for entry in entries:
        if not isinstance(entry, dict) or facts.image_owner(entry) is Owner.FOREIGN:
            continue
        tags = [str(t) for t in entry.get("RepoTags") or []]
        visible = facts.visible_tags(tags)
        if tags and not visible and facts.image_owner(entry) is Owner.SHARED:
            # An untagged-for-us image made by another job (tags are all theirs).
            continue
        out.append({**entry, "RepoTags": visible})
    return out


def present_df(answer: Any, tenant: Tenant, facts: ImageFacts) -> dict[str, Any]:
    """`system df`: only the tenant's containers and volumes, visible images, no build cache."""
    out: dict[str, Any] = dict(answer) if isinstance(answer, dict) else {}
    out["Containers"] = present_container_list(out.get("Containers"), tenant)
    in_use: dict[str, int] = {}
    for container in out["Containers"]:
        image_id = str(container.get("ImageID", ""))
        in_use[image_id] = in_use.get(image_id, 0) + 1
    # Per-image container counts would reveal other jobs' containers: count the job's.
    out["Images"] = [
        {**image, "Containers": in_use.get(str(image.get("Id", "")), 0)}
        for image in present_image_list(out.get("Images"), facts)
    ]
    out["Volumes"] = [
        present_volume(v, tenant)
        for v in out.get("Volumes") or []
        if isinstance(v, dict) and volume_mine(v, tenant, frozenset())
    ]
    out["BuildCache"] = []
    # The daemon's LayersSize counts every image on it: the job's figure is the images it
    # sees (their layers counted once each where dockerd says what they share).
    out["LayersSize"] = _layers_size(out["Images"])
    return out


def _layers_size(images: list[dict[str, Any]]) -> int:
    """The disk the listed images take: each one's own part, plus the largest part any
    of them shares (dockerd's SharedSize, -1 when not computed, counts every image)."""
    unique = 0
    shared = 0
    for image in images:
        size = image.get("Size")
        part = image.get("SharedSize")
        if not isinstance(size, int) or isinstance(size, bool):
            continue
        if isinstance(part, int) and not isinstance(part, bool) and 0 <= part <= size:
            unique += size - part
            shared = max(shared, part)
        else:
            unique += size
    return unique + shared


def present_stats(stats: Mapping[str, Any], tenant: Tenant) -> dict[str, Any]:
    """One `containers/{id}/stats` sample: the container's name without the prefix."""
    out = dict(stats)
    name = out.get("name")
    if isinstance(name, str):
        out["name"] = tenant.namespace.client_name(name)
    return out


def present_event(
    event: Mapping[str, Any], tenant: Tenant, facts: ImageFacts
) -> dict[str, Any] | None:
    """An event as the tenant sees it, or None when it is not the tenant's."""
    kind = event.get("Type")
    raw_actor = event.get("Actor")
    actor: dict[str, Any] = dict(raw_actor) if isinstance(raw_actor, dict) else {}
    attributes = dict(actor.get("Attributes") or {})
    ns = tenant.namespace
    if kind == "container":
        # Container events carry the container's labels as attributes.
        if attributes.get(TENANT_LABEL) != tenant.name:
            return None
    elif kind in ("volume", "network"):
        name = str(attributes.get("name", actor.get("ID", "")))
        if kind == "network" and name in PREDEFINED_NETWORKS:
            # Connects on a shared network name only a container id: not provably ours.
            return None
        if not ns.owns_name(name) and attributes.get(TENANT_LABEL) != tenant.name:
            return None
    elif kind == "image":
        name = str(attributes.get("name", ""))
        if name and not facts.tag_mine(name) and attributes.get(TENANT_LABEL) != tenant.name:
            return None
        if not name and attributes.get(TENANT_LABEL) != tenant.name:
            return None
    else:
        return None  # daemon, plugin, service... events are not a tenant's business
    for key in ("name", "container", "image"):
        value = attributes.get(key)
        if isinstance(value, str):
            attributes[key] = ns.client_name(value)
    out = dict(event)
    out["Actor"] = {**actor, "Attributes": attributes}
    if kind == "volume" and isinstance(actor.get("ID"), str):
        out["Actor"]["ID"] = ns.client_name(actor["ID"])
    return out
