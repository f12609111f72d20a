"""Helpers for tenancy engine tests: a real `dockmoat serve` subprocess, jobs, engine snapshots."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from harness.clients import client
from support.processes import terminate

REPO = Path(__file__).resolve().parents[3]
DOCKMOAT = [sys.executable, "-m", "dockmoat"]
DOCKER_NEW = client("docker") or "docker"  # the current CLI (28.x)
DOCKER_OLD = client("docker-20.10") or "docker-20.10"  # named, so a missing one fails loudly
COMPOSE = {"v1": [client("docker-compose-v1") or "docker-compose-v1"], "v2": ["docker", "compose"]}


def _wait_for_socket(
    path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dockmoat serve exited: {log.read_text()}")
        if path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear: {log.read_text()}")


@dataclass
class Serve:
    """One `dockmoat serve` with its own control socket, jobs folder and state database."""

    root: Path
    upstream: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: tuple[str, ...] = ()

    @property
    def control(self) -> Path:
        return self.root / "control.sock"

    @property
    def log(self) -> Path:
        return self.root / f"serve-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        argv = [
            *DOCKMOAT,
            "serve",
            "--listen",
            f"unix://{self.root / 'main.sock'}",
            "--upstream",
            self.upstream,
            "--state-db",
            str(self.root / "state.db"),
            "--control-socket",
            str(self.control),
            "--jobs-dir",
            str(self.root / "jobs"),
            *self.extra,
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        _wait_for_socket(self.control, self.proc, self.log)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, grace=20)

    def job(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*DOCKMOAT, "job", *args, "--control", str(self.control)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        if check:
            assert result.returncode == 0, result.stderr + self.log.read_text()[-3000:]
        return result

    def open_job(self, name: str, *extra: str) -> Job:
        out = self.job("open", name, *extra).stdout.strip()
        assert out.startswith("DOCKER_HOST=unix://") and out.endswith("; export DOCKER_HOST"), out
        return Job(name, out.removeprefix("DOCKER_HOST=").split(";")[0], self)


@dataclass
class Job:
    name: str
    docker_host: str
    serve: Serve
    closed: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @property
    def socket(self) -> str:
        return self.docker_host.removeprefix("unix://")

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update({"DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "0", **self.env})
        return env

    def docker(
        self,
        *args: str,
        cli: str = DOCKER_NEW,
        check: bool = True,
        stdin: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [cli, *args],
            capture_output=True,
            text=True,
            timeout=180,
            env=self.environ(),
            input=stdin,
            cwd=cwd,
        )
        if check:
            assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
        return result

    def compose(
        self, project_dir: Path, *args: str, check: bool = True, version: str = "v2"
    ) -> subprocess.CompletedProcess[str]:
        """Compose v2 (the CLI plugin) by default; `version="v1"` for docker-compose 1.29."""
        result = subprocess.run(
            [*COMPOSE[version], *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=self.environ(),
            cwd=project_dir,
        )
        if check:
            assert result.returncode == 0, f"compose {version} {' '.join(args)}: {result.stderr}"
        return result

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, version="1.41", timeout=60)

    def close(self) -> dict[str, list[str]]:
        result = self.serve.job("close", self.name, "--format", "json")
        self.closed = True
        removed: dict[str, list[str]] = json.loads(result.stdout)["removed"]
        return removed


def job_name(role: str) -> str:
    return f"dmtest-{role}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Snapshot:
    containers: frozenset[tuple[str, str]]
    volumes: frozenset[str]
    networks: frozenset[tuple[str, str]]
    images: frozenset[tuple[str, tuple[str, ...]]]


def snapshot(client: docker.DockerClient) -> Snapshot:
    """What the engine holds, as (id, name) pairs and image (id, tags)."""
    api = client.api
    return Snapshot(
        containers=frozenset((c["Id"], c["Names"][0]) for c in api.containers(all=True)),
        volumes=frozenset(v["Name"] for v in api.volumes()["Volumes"] or []),
        networks=frozenset((n["Id"], n["Name"]) for n in api.networks()),
        images=frozenset(
            (i["Id"], tuple(sorted(i["RepoTags"] or []))) for i in api.images(all=True)
        ),
    )


def attributable(
    snap: Snapshot, job: str, tags: frozenset[str] = frozenset()
) -> dict[str, set[object]]:
    """The part of a snapshot that belongs to `job`: its name space, or tags it made."""
    prefix = f"{job}--"
    return {
        "containers": {c for c in snap.containers if c[1].lstrip("/").startswith(prefix)},
        "volumes": {v for v in snap.volumes if v.startswith(prefix)},
        "networks": {n for n in snap.networks if n[1].startswith(prefix)},
        "images": {i for i in snap.images if set(i[1]) & tags},
    }


def labelled(client: docker.DockerClient, job: str) -> dict[str, list[str]]:
    """Everything on the engine that carries the job's ownership label."""
    api = client.api
    label = {"label": f"dockmoat.tenant={job}"}
    return {
        "containers": [c["Id"] for c in api.containers(all=True, filters=label)],
        "volumes": [v["Name"] for v in api.volumes(filters=label)["Volumes"] or []],
        "networks": [n["Id"] for n in api.networks(filters=label)],
        "images": [i["Id"] for i in api.images(filters=label)],
    }


def assert_nothing_left(
    client: docker.DockerClient, job: str, tags: frozenset[str] = frozenset()
) -> None:
    leftovers = attributable(snapshot(client), job, tags)
    assert leftovers == {"containers": set(), "volumes": set(), "networks": set(), "images": set()}
    assert labelled(client, job) == {"containers": [], "volumes": [], "networks": [], "images": []}


def footprint(
    client: docker.DockerClient, job: str, before: Snapshot, tags: frozenset[str] = frozenset()
) -> dict[str, set[str]]:
    """Every engine object the job made (ids), taken while the job is open.

    Containers, volumes and networks by label or name space, anonymous volumes of
    its containers, its images by label or tag, and their intermediate build
    layers (parents back to what existed before the job).
    """
    api = client.api
    snap = snapshot(client)
    ours = attributable(snap, job, tags)
    owned = labelled(client, job)
    containers = {c[0] for c in ours["containers"]} | set(owned["containers"])  # type: ignore[index]
    volumes = {str(v) for v in ours["volumes"]} | set(owned["volumes"])
    for cid in containers:
        for mount in api.inspect_container(cid)["Mounts"]:
            if mount["Type"] == "volume":
                volumes.add(mount["Name"])
    networks = {n[0] for n in ours["networks"]} | set(owned["networks"])  # type: ignore[index]
    old_images = {i[0] for i in before.images}
    images = {i[0] for i in ours["images"]} | set(owned["images"])  # type: ignore[index]
    images = {i for i in images if i not in old_images}
    for image in list(images):
        parent = api.inspect_image(image)["Parent"]
        while parent and parent not in old_images:
            images.add(parent)
            parent = api.inspect_image(parent)["Parent"]
    return {"containers": containers, "volumes": volumes, "networks": networks, "images": images}


def assert_footprint_gone(client: docker.DockerClient, made: dict[str, set[str]]) -> None:
    """None of what the job made exists on the engine any more."""
    snap = snapshot(client)
    left = {
        "containers": made["containers"] & {c[0] for c in snap.containers},
        "volumes": made["volumes"] & set(snap.volumes),
        "networks": made["networks"] & {n[0] for n in snap.networks},
        "images": made["images"] & {i[0] for i in snap.images},
    }
    assert left == {"containers": set(), "volumes": set(), "networks": set(), "images": set()}
