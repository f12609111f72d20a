"""Helpers for `dockmoat run` engine tests: the CLI as a subprocess and engine snapshots."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[4]
PIPELINE = REPO / "examples" / "pipeline"
DOCKMOAT = (sys.executable, "-m", "dockmoat")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOCKMOAT_"))}
    env.update(extra or {})
    return env


def dockmoat_run(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DOCKMOAT, "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(env),
        check=False,
    )


def popen_run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*DOCKMOAT, "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )


@dataclass(frozen=True)
class Snapshot:
    """The engine's resources that a `dockmoat run` (or its job) could have made."""

    containers: frozenset[str] = field(default_factory=frozenset)
    networks: frozenset[str] = field(default_factory=frozenset)
    volumes: frozenset[str] = field(default_factory=frozenset)
    images: frozenset[str] = field(default_factory=frozenset)

    def minus(self, other: Snapshot) -> Snapshot:
        return Snapshot(
            self.containers - other.containers,
            self.networks - other.networks,
            self.volumes - other.volumes,
            self.images - other.images,
        )

    def empty(self) -> bool:
        return not (self.containers or self.networks or self.volumes or self.images)


# dockmoat run's names: the job container dockmoat-run-ID, the nested daemon's
# dockmoat-dind(tmp)-run-ID-..., guarded jobs' resources run-ID--... (tenancy prefix).
_OURS = re.compile(
    r"^/?(dockmoat-run-|dockmoat-dind-run-|dockmoat-dindtmp-run-|run-)[0-9a-f]{8}(?![0-9a-f])"
)
_TENANT = re.compile(r"^run-[0-9a-f]{8}$")


def _ours(name: str) -> bool:
    return bool(_OURS.match(name))


def _tenant(labels: dict[str, str] | None) -> bool:
    return bool(_TENANT.match(str((labels or {}).get("dockmoat.tenant", ""))))


def snapshot(client: docker.DockerClient, images: tuple[str, ...] = ()) -> Snapshot:
    api = client.api
    containers = {
        c["Names"][0].lstrip("/")
        for c in api.containers(all=True)
        if _ours(c["Names"][0])
        or "io.dockmoat.run" in (c.get("Labels") or {})
        or str((c.get("Labels") or {}).get("dockmoat.tenant", "")).startswith("run-")
    }
    networks = {
        n["Name"]
        for n in api.networks()
        if _ours(n["Name"])
        or str((n.get("Labels") or {}).get("dockmoat.tenant", "")).startswith("run-")
    }
    volumes = {
        v["Name"]
        for v in (api.volumes().get("Volumes") or [])
        if _ours(v["Name"])
        or str((v.get("Labels") or {}).get("dockmoat.tenant", "")).startswith("run-")
    }
    tags: set[str] = set()
    for image in api.images():
        labels = image.get("Labels") or {}
        for tag in image.get("RepoTags") or []:
            if tag in images or _tenant(labels):
                tags.add(tag)
    return Snapshot(frozenset(containers), frozenset(networks), frozenset(volumes), frozenset(tags))


def assert_nothing_left(
    client: docker.DockerClient, before: Snapshot, images: tuple[str, ...] = ()
) -> None:
    left = snapshot(client, images).minus(before)
    assert left.empty(), f"left on the engine: {left}"
