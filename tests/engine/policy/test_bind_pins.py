"""Bind sources are pinned: swapping a checked folder for a symlink after the create
does not redirect what dockerd mounts at start (and at restart).

The raw-engine control proves the hole on this engine: dockerd mounts a bind source
by its path when the container starts, following whatever symlink is there then.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from policygw import Gateway
from rawdocker import call, create_container, socket_of

from dockmoat.gateway.config import DEFAULT_PIN_DIR
from dockmoat.gateway.pins import mount_sources
from harness.clients import client

DOCKER = client("docker") or "docker"

# pins bind sources: the host's mount namespace
pytestmark = [pytest.mark.engine, pytest.mark.host_namespaces]


def _folders(base: Path, secret: Path) -> None:
    (base / "d").mkdir(parents=True)
    (base / "d" / "marker").write_text("inside\n")
    secret.mkdir()
    (secret / "marker").write_text("SECRET\n")


def _swap(base: Path, secret: Path) -> None:
    """What a job that can write its workspace does between create and start."""
    (base / "d").rename(base / "d.old")
    (base / "d").symlink_to(secret)


def _create(socket_path: str, image: str, label: str, host_config: dict[str, Any]) -> Any:
    return create_container(
        socket_path, image, ["cat", "/h/marker"], {"dmtest.pins": label}, host_config
    )


def _run(socket_path: str, client: docker.DockerClient, container_id: str) -> bytes:
    status, answer = call(socket_path, "POST", f"/v1.41/containers/{container_id}/start")
    assert status == 204, answer
    container = client.containers.get(container_id)
    container.wait(timeout=30)
    logs: bytes = container.logs()
    return logs


def test_raw_engine_follows_a_folder_swapped_for_a_symlink_after_create(
    tmp_path: Path,
    docker_host: str,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    base, secret = tmp_path / "ws", tmp_path / "secret"
    _folders(base, secret)
    raw = socket_of(docker_host)
    status, answer = _create(raw, busybox_image, unique_name("pin"), {"Binds": [f"{base}/d:/h"]})
    assert status == 201, answer
    containers.append(answer["Id"])
    _swap(base, secret)
    assert _run(raw, docker_client, answer["Id"]) == b"SECRET\n"  # the hole


@pytest.mark.parametrize("kind", ["Binds", "Mounts"])
def test_gateway_pins_the_checked_folder_for_start_and_restart(
    kind: str,
    gateway: Gateway,
    tmp_path: Path,
    docker_host: str,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    base, secret = gateway.workspace / unique_name("pin"), tmp_path / "secret"
    _folders(base, secret)
    if kind == "Binds":
        host_config: dict[str, Any] = {"Binds": [f"{base}/d:/h:ro"]}
    else:
        host_config = {"Mounts": [{"Type": "bind", "Source": f"{base}/d", "Target": "/h"}]}
    status, answer = _create(str(gateway.socket), busybox_image, unique_name("pin"), host_config)
    assert status == 201, answer
    containers.append(answer["Id"])
    _swap(base, secret)
    assert _run(str(gateway.socket), docker_client, answer["Id"]) == b"inside\n"
    container = docker_client.containers.get(answer["Id"])
    container.restart(timeout=1)  # a restart mounts the source again, by its path
    container.wait(timeout=30)
    assert container.logs() == b"inside\ninside\n"
    (source,) = [mount["Source"] for mount in container.attrs["Mounts"]]
    assert Path(source).parent.parent == DEFAULT_PIN_DIR
    # What the sweep keeps: the daemon's own list names the pin.
    status, listing = call(socket_of(docker_host), "GET", "/v1.41/containers/json?all=1")
    assert status == 200 and source in mount_sources(listing)


def test_a_missing_mount_source_is_refused_and_nothing_is_created(
    gateway: Gateway,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    label = unique_name("pin")
    absent = gateway.workspace / unique_name("absent")
    mount = {"Type": "bind", "Source": str(absent), "Target": "/h"}
    status, answer = _create(str(gateway.socket), busybox_image, label, {"Mounts": [mount]})
    if status == 201:
        containers.append(answer["Id"])
    assert status == 400, answer
    assert answer["message"].endswith(f"bind source path does not exist: {absent}")
    made = docker_client.containers.list(all=True, filters={"label": f"dmtest.pins={label}"})
    assert made == [] and not absent.exists()


def test_inspect_through_the_guard_names_the_source_the_client_asked_for(
    gateway: Gateway,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    """Transparent pins (issue 21): the container mounts the pin, but `docker inspect`
    and the SDK, through the guard, read the sources as the client wrote them (the raw
    engine shows the pins, which is what made SDK and compose checks fail)."""
    base = gateway.workspace / unique_name("asked")
    (base / "d").mkdir(parents=True)
    (base / "d" / "marker").write_text("inside\n")
    asked_bind, asked_mount = f"{base}/d", f"{base}/d/marker"
    host_config = {
        "Binds": [f"{asked_bind}:/h:ro"],
        "Mounts": [{"Type": "bind", "Source": asked_mount, "Target": "/m"}],
    }
    status, answer = _create(str(gateway.socket), busybox_image, unique_name("pin"), host_config)
    assert status == 201, answer
    containers.append(answer["Id"])
    raw = docker_client.containers.get(answer["Id"]).attrs
    assert all(Path(m["Source"]).parent.parent == DEFAULT_PIN_DIR for m in raw["Mounts"])
    # The real docker CLI, through the guard.
    cli = subprocess.run(
        [DOCKER, "inspect", "--format", "{{json .Mounts}}|{{json .HostConfig}}", answer["Id"]],
        env=gateway.env(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    mounts_text, host_text = cli.stdout.strip().split("|", 1)
    assert sorted(m["Source"] for m in json.loads(mounts_text)) == [asked_bind, asked_mount]
    host = json.loads(host_text)
    assert host["Binds"] == [f"{asked_bind}:/h:ro"]
    assert [m["Source"] for m in host["Mounts"]] == [asked_mount]
    # The SDK, through the guard.
    guarded = docker.DockerClient(base_url=gateway.host)
    try:
        attrs = guarded.containers.get(answer["Id"]).attrs
        (listed,) = guarded.api.containers(all=True, filters={"id": answer["Id"]})
    finally:
        guarded.close()
    assert sorted(m["Source"] for m in attrs["Mounts"]) == [asked_bind, asked_mount]
    assert sorted(m["Source"] for m in listed["Mounts"]) == [asked_bind, asked_mount]
    # And it still runs what was checked.
    assert _run(str(gateway.socket), docker_client, answer["Id"]) == b"inside\n"


def test_compose_v2_sees_the_sources_it_asked_for(
    gateway: Gateway, busybox_image: str, unique_name: Callable[[str], str]
) -> None:
    """A compose v2 project with a relative bind (`./data`), up through the guard: the
    container mounts a pin, and compose's own inspect of it (`compose ps` reads the
    containers, `docker inspect` as compose users do) names the folder it asked for."""
    project = unique_name("pinsproj")
    ws = gateway.workspace / project
    (ws / "data").mkdir(parents=True)
    (ws / "compose.yaml").write_text(
        f"services:\n  app:\n    image: {busybox_image}\n    pull_policy: never\n"
        "    command: [sleep, '60']\n    volumes: ['./data:/data:ro']\n"
    )
    compose = [DOCKER, "compose", "-p", project]

    def run(*args: str) -> str:
        done = subprocess.run([*compose, *args], cwd=ws, env=gateway.env(), capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        run("up", "-d")
        (container_id,) = run("ps", "-q").split()
        inspect = subprocess.run(
            [DOCKER, "inspect", "--format", "{{json .Mounts}}", container_id],
            env=gateway.env(), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        (mount,) = json.loads(inspect.stdout)
        assert mount["Source"] == str(ws / "data")
        run("up", "-d")  # a second up finds the project as it left it: nothing recreated
        assert run("ps", "-q").split() == [container_id]
    finally:
        run("down", "-t", "0")
