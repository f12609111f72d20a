"""Removing everything a job owns: containers (forced), then networks, volumes, images.

The inventory is the union of the store's records and the engine's labels, so
a close after a gateway crash still finds what was created but never recorded
(and what was recorded but never created is simply not found). A shared image
is never removed: the job's own tags on it are untagged, and an image that is
still in use elsewhere is kept (dockerd refuses with 409 and that is fine).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from dockmoat.tenancy.engine import EngineApi
from dockmoat.tenancy.model import TENANT_LABEL, Tenant
from dockmoat.tenancy.store import OwnershipStore


@dataclass(slots=True)
class Removed:
    """What a close removed, in the tenant's own names; `kept` says what stayed and why."""

    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "containers": self.containers,
            "networks": self.networks,
            "volumes": self.volumes,
            "images": self.images,
            "kept": self.kept,
        }


def _label_filter(tenant: Tenant) -> dict[str, list[str]]:
    return {"label": [f"{TENANT_LABEL}={tenant.name}"]}


async def _list(engine: EngineApi, path: str, query: dict[str, object]) -> list[dict[str, object]]:
    status, answer = await engine.call("GET", path, query)
    if status != 200:
        raise RuntimeError(f"listing {path} failed with {status}: {answer}")
    if isinstance(answer, dict):  # /volumes answers {"Volumes": [...]}
        answer = answer.get("Volumes") or []
    return [a for a in answer if isinstance(a, dict)] if isinstance(answer, list) else []


# A loaded dockerd may keep the endpoint of a container it has removed and refuse the
# network's removal for good (403 "has active endpoints"; the soak suite, docs/soak.md
# fix 6). A refused removal is tried again after the network's endpoints whose
# container is gone, or is the job's, are force-disconnected by name (the one way
# dockerd finds a stale endpoint): those the inspect lists and those the refusal
# names. An endpoint of a live container that is not the job's (another tenant's, the
# host's) is never touched. What stays is named in `kept` with the engine's answers:
# dockerd 28.5's own stale endpoint (not in the inspect, 404 to a disconnect by name)
# goes only when that dockerd restarts.
_NETWORK_TRIES = 5
_NETWORK_WAIT = 0.5


async def _container(engine: EngineApi, ref: str) -> tuple[int, dict[str, object]]:
    status, answer = await engine.call("GET", f"/containers/{ref}/json")
    return status, answer if isinstance(answer, dict) else {}


def _is_job_s(container: dict[str, object], tenant: Tenant) -> bool:
    config = container.get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    return isinstance(labels, dict) and labels.get(TENANT_LABEL) == tenant.name


# dockerd 28 names the endpoints in its refusal (`has active endpoints (name:"x"
# id:"y")`); a stale one may be missing from the network's inspect (`Containers`).
_REFUSED_NAMES = re.compile(r'name:"([^"]+)"')


async def _free_endpoints(
    engine: EngineApi, key: str, tenant: Tenant, refusal: str
) -> tuple[int, list[str], list[str]]:
    """Force-disconnect the network's endpoints of gone containers and of the job's
    own (those its inspect lists, and those the refusal names); return how many
    endpoints the inspect listed, the live containers not the job's (kept), and the
    force-disconnects the engine refused."""
    status, net = await engine.call("GET", f"/networks/{key}")
    listed = net.get("Containers") if status == 200 and isinstance(net, dict) else None
    endpoints: dict[str, str] = {}  # container id (or "ep-..."), endpoint name
    for cid, endpoint in listed.items() if isinstance(listed, dict) else ():
        endpoints[str(cid)] = str(endpoint.get("Name") or "") if isinstance(endpoint, dict) else ""
    named = {name for name in _REFUSED_NAMES.findall(refusal)} - set(endpoints.values())
    endpoints.update({f"name:{name}": name for name in sorted(named)})
    held: list[str] = []
    failed: list[str] = []
    for cid, name in endpoints.items():
        status, container = (404, {}) if cid.startswith("name:") else await _container(engine, cid)
        if status == 200:
            if not _is_job_s(container, tenant):
                held.append(name or cid[:12])
                continue
            target = cid
        elif status == 404 and name:
            # Gone: dockerd finds a stale endpoint by its name only (not by the id),
            # and a name now taken by a live container would disconnect that one.
            status, container = await _container(engine, name)
            if status == 200 and not _is_job_s(container, tenant):
                held.append(name)
                continue
            if status not in (200, 404):
                continue
            target = name
        else:
            continue
        status, answer = await engine.call(
            "POST", f"/networks/{key}/disconnect", body={"Container": target, "Force": True}
        )
        if status != 200:  # said in kept if the network stays
            said = answer.get("message", "") if isinstance(answer, dict) else ""
            failed.append(f"force-disconnecting {target}: {status} {said}".strip())
    return len(listed) if isinstance(listed, dict) else 0, held, failed


async def _remove_network(
    engine: EngineApi, key: str, tenant: Tenant
) -> tuple[int, str, list[str]]:
    """(status, the engine's message and the endpoints its inspect listed, live
    containers not the job's that hold it)."""
    status, message = 0, ""
    held: list[str] = []
    for attempt in range(_NETWORK_TRIES):
        if attempt:
            await asyncio.sleep(_NETWORK_WAIT)
        status, answer = await engine.call("DELETE", f"/networks/{key}")
        if status in (200, 204, 404):
            break
        message = str(answer.get("message", "")) if isinstance(answer, dict) else ""
        listed, held, failed = await _free_endpoints(engine, key, tenant, message)
        message += f" ({listed} endpoints listed{''.join(f'; {f}' for f in failed)})"
    return status, message, held


async def clean_up(store: OwnershipStore, engine: EngineApi, tenant: Tenant) -> Removed:
    """Remove everything the tenant owns on the engine. Raises when the engine is unreachable."""
    removed = Removed()
    ns = tenant.namespace
    name = tenant.name

    containers: dict[str, str] = {cid: cid[:12] for cid in store.owned(name, "container") if cid}
    for entry in await _list(
        engine, "/containers/json", {"all": "1", "filters": _label_filter(tenant)}
    ):
        names = entry.get("Names") or []
        shown = (
            ns.client_name(str(names[0])).lstrip("/") if isinstance(names, list) and names else ""
        )
        containers[str(entry.get("Id"))] = shown or str(entry.get("Id"))[:12]
    for cid, shown in containers.items():
        status, _ = await engine.call("DELETE", f"/containers/{cid}", {"force": "1", "v": "1"})
        if status in (200, 204):
            removed.containers.append(shown)

    networks: dict[str, str] = {
        key: ns.client_name(key) for key in store.owned(name, "network") if key
    }
    for entry in await _list(engine, "/networks", {"filters": _label_filter(tenant)}):
        networks.pop(str(entry.get("Name")), None)
        networks[str(entry.get("Id"))] = ns.client_name(str(entry.get("Name")))
    for key, shown in networks.items():
        status, message, held = await _remove_network(engine, key, tenant)
        if status in (200, 204) and shown not in removed.networks:
            removed.networks.append(shown)
        elif status not in (200, 204, 404):
            said = f": {message}" if message else ""
            holders = f"; in use by {', '.join(held)}, not the job's" if held else ""
            removed.kept.append(f"network {shown} (the engine answered {status}{said}{holders})")

    volumes = {key for key in store.owned(name, "volume") if key}
    for entry in await _list(engine, "/volumes", {}):
        vol_name = str(entry.get("Name"))
        labels = entry.get("Labels")
        owner = labels.get(TENANT_LABEL) if isinstance(labels, dict) else None
        if owner == name or (owner is None and ns.owns_name(vol_name)):
            volumes.add(vol_name)
    for vol_name in sorted(volumes):
        status, _ = await engine.call("DELETE", f"/volumes/{vol_name}", {"force": "1"})
        if status in (200, 204):
            removed.volumes.append(ns.client_name(vol_name))

    # Tags first (untag, or delete when it was the last), then the images the job built.
    # A tag goes only while it names what the job made or tagged: the host (or any
    # untenanted client) may have moved it to an image of its own since.
    image_ids = set(store.owned(name, "image"))
    for entry in await _list(engine, "/images/json", {"filters": _label_filter(tenant)}):
        image_ids.add(str(entry.get("Id")))
    tagged = {
        tag: image for tag, _, image in (t.partition("=") for t in store.owned(name, "tagged"))
    }
    for tag in store.owned(name, "tag"):
        status, image = await engine.call("GET", f"/images/{tag}/json")
        if status != 200 or not isinstance(image, dict):
            continue  # gone already (or never made)
        current = str(image.get("Id"))
        labels = (image.get("Config") or {}).get("Labels") or {}
        if (
            current not in image_ids
            and tagged.get(tag) != current
            and (not isinstance(labels, dict) or labels.get(TENANT_LABEL) != name)
        ):
            removed.kept.append(f"image {tag} (now names an image job {name} did not make)")
            continue
        status, _ = await engine.call("DELETE", f"/images/{tag}")
        if status == 200:
            removed.images.append(tag)
        elif status == 409:
            removed.kept.append(f"image {tag} (in use)")
    for image_id in sorted(image_ids):
        status, _ = await engine.call("DELETE", f"/images/{image_id}")
        if status == 200:
            removed.images.append(image_id.removeprefix("sha256:")[:12])
        elif status == 409:
            removed.kept.append(f"image {image_id.removeprefix('sha256:')[:12]} (in use)")
    return removed
