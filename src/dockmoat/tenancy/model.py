"""Tenants, ownership labels and the facts the tenancy rules decide on (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dockmoat.tenancy.names import Namespace

TENANT_LABEL = "dockmoat.tenant"
# The daemon's own networks: usable by every tenant, owned by none.
PREDEFINED_NETWORKS = frozenset({"bridge", "none", "host", "default"})
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per-tenant limits; None means unlimited."""

    running_containers: int | None = None
    memory_bytes: int | None = None
    volumes: int | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    namespace: Namespace
    quotas: Quotas = field(default_factory=Quotas)

    @classmethod
    def job(cls, job: str, quotas: Quotas | None = None) -> Tenant:
        return cls(job, Namespace.for_job(job), quotas or Quotas())


class Owner(Enum):
    MINE = "mine"
    SHARED = "shared"  # images nobody owns: usable, never removable
    FOREIGN = "foreign"  # another tenant's, or not made through this gateway


def is_full_id(ref: str) -> bool:
    return bool(_FULL_ID.match(ref))


def label_owner(labels: Mapping[str, str] | None) -> str | None:
    if not labels:
        return None
    owner = labels.get(TENANT_LABEL)
    return owner if isinstance(owner, str) else None


@dataclass(frozen=True, slots=True)
class ContainerFact:
    """One container of the tenant, as the engine lists it."""

    id: str
    names: tuple[str, ...]  # engine-side, with leading "/"
    running: bool = False

    @classmethod
    def from_list_entry(cls, entry: Mapping[str, Any]) -> ContainerFact:
        return cls(
            id=str(entry.get("Id", "")),
            names=tuple(str(n) for n in entry.get("Names") or ()),
            running=entry.get("State") in ("running", "paused", "restarting"),
        )


@dataclass(frozen=True, slots=True)
class NetworkFact:
    id: str
    name: str  # engine-side

    @classmethod
    def from_list_entry(cls, entry: Mapping[str, Any]) -> NetworkFact:
        return cls(id=str(entry.get("Id", "")), name=str(entry.get("Name", "")))


def resolve_container(
    ref: str, owned: Sequence[ContainerFact], namespace: Namespace
) -> ContainerFact | None:
    """The tenant's container a reference means, in dockerd's order: full id, name, id prefix.

    Only the tenant's own containers are candidates, so another tenant's
    container can never be the answer, whatever the reference.
    """
    if not ref:
        return None
    for fact in owned:
        if fact.id == ref:
            return fact
    # The job's own name space first; then its containers' plain names (names
    # dockerd generated, such as "happy_turing", carry no prefix).
    for wanted in ("/" + namespace.engine_name(ref.lstrip("/")), "/" + ref.lstrip("/")):
        for fact in owned:
            if wanted in fact.names:
                return fact
    if re.fullmatch(r"[0-9a-f]+", ref):
        matches = [fact for fact in owned if fact.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
    return None


def resolve_network(
    ref: str, owned: Sequence[NetworkFact], namespace: Namespace
) -> NetworkFact | None:
    """The tenant's network a reference means: full id, name, then unique id prefix."""
    if not ref:
        return None
    for fact in owned:
        if fact.id == ref:
            return fact
    for wanted in (namespace.engine_name(ref), ref):
        for fact in owned:
            if fact.name == wanted:
                return fact
    if re.fullmatch(r"[0-9a-f]+", ref):
        matches = [fact for fact in owned if fact.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
    return None


def normalize_tag(ref: str) -> str:
    """An image reference as `RepoTags` spells it: familiar name, `:latest` when untagged."""
    name = ref
    for prefix in (
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if "@" in name:
        return name
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name


def looks_like_image_id(ref: str) -> bool:
    bare = ref.removeprefix("sha256:")
    return bool(re.fullmatch(r"[0-9a-f]{1,64}", bare)) and (
        ref.startswith("sha256:") or len(bare) >= 12 or bare == ref
    )


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """Who owns image ids and tags, from labels and the store."""

    tenant: str
    id_owners: Mapping[str, frozenset[str]]  # image id -> tenants (store)
    tag_owners: Mapping[str, frozenset[str]]  # normalized tag -> tenants (store)

    def image_owner(self, image: Mapping[str, Any]) -> Owner:
        image_id = str(image.get("Id", ""))
        config = image.get("Config") or {}
        owner = label_owner(config.get("Labels") if isinstance(config, Mapping) else None)
        if owner is None:
            owner = label_owner(image.get("Labels"))  # list entries carry Labels at top level
        holders = set(self.id_owners.get(image_id, frozenset()))
        if owner is not None:
            holders.add(owner)
        if not holders:
            return Owner.SHARED
        return Owner.MINE if self.tenant in holders else Owner.FOREIGN

    def tag_visible(self, tag: str) -> bool:
        """A tag is visible unless only other tenants made it."""
        owners = self.tag_owners.get(tag)
        return not owners or self.tenant in owners

    def tag_mine(self, tag: str) -> bool:
        return self.tenant in self.tag_owners.get(tag, frozenset())

    def visible_tags(self, tags: Sequence[str]) -> list[str]:
        return [tag for tag in tags if self.tag_visible(tag)]
