"""Helpers for `dockmoat run` engine tests: the CLI as a subprocess and engine snapshots."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import docker
import pytest

REPO = Path(__file__).resolve().parents[4]
PIPELINE = REPO / "examples" / "pipeline"
DOCKMOAT = (sys.executable, "-m", "dockmoat")
JOB_IMAGE = "dockmoat-test/dind:latest"  # carries the docker CLI and sh


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


def wait_for_line(stream: IO[str] | None, word: str, seconds: float = 120) -> str:
    """Read lines until one holds `word`; what was read, or the test fails."""
    assert stream is not None
    deadline = time.monotonic() + seconds
    seen = ""
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
        if word in line:
            return seen
    pytest.fail(f"{word!r} never appeared: {seen!r}")


@contextlib.contextmanager
def killed_on_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Whatever the test body does, the `dockmoat run` process does not outlive it."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


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


def _made_by_a_run(name: str, labels: dict[str, str] | None) -> bool:
    """Named like a run's resources, or labelled with a run's tenant."""
    return _ours(name) or str((labels or {}).get("dockmoat.tenant", "")).startswith("run-")


def snapshot(client: docker.DockerClient, images: tuple[str, ...] = ()) -> Snapshot:
    api = client.api
    containers = {
        c["Names"][0].lstrip("/")
        for c in api.containers(all=True)
        if _made_by_a_run(c["Names"][0], c.get("Labels"))
        or "io.dockmoat.run" in (c.get("Labels") or {})
    }
    networks = {n["Name"] for n in api.networks() if _made_by_a_run(n["Name"], n.get("Labels"))}
    volumes = {
        v["Name"]
        for v in (api.volumes().get("Volumes") or [])
        if _made_by_a_run(v["Name"], v.get("Labels"))
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
