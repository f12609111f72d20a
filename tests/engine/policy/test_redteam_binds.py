"""Red team: bind sources that the guard and dockerd resolve differently.

Two holes, both proved on this engine: (1) `link/..` (below); (2) a chain of
symlinks whose resolved spelling is longer than PATH_MAX: `os.path.realpath`
gets ENAMETOOLONG, silently stops following links and answers a path inside the
workspace, while the kernel walks the short source and lands on `/`.

dockerd cleans a bind source lexically (Go's `path.Clean`) BEFORE the kernel
follows symlinks, so `WS/link/../..` drops `link` without looking at it. A guard
that follows the symlink first (realpath) sees a path inside the workspace while
dockerd mounts one outside it. The raw-engine control proves the effect on this
engine; through the gateway the request must be refused and nothing created.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from policygw import Gateway
from rawdocker import call, create_container, socket_of

pytestmark = pytest.mark.engine


def _escape_source(base: Path, target: str) -> str:
    """A source inside `base` for realpath, `target` for Go's path.Clean.

    base/link points at a chain of `d` folders deep enough that the `..` steps
    end inside base when the link is followed first; lexically the first `..`
    removes `link` and the rest climb to `/`.
    """
    depth = len(base.parts) - 1  # components below "/"
    deep = base.joinpath(*["d"] * (2 * depth + 2))
    deep.mkdir(parents=True, exist_ok=True)
    (base / "link").symlink_to(deep)
    source = f"{base}/link/" + "../" * (depth + 1) + target.lstrip("/")
    # What the kernel resolves the raw string to (inside base) must exist for Mounts.
    Path(os.path.realpath(source)).mkdir(parents=True, exist_ok=True)
    return source


def _long_chain_source(base: Path) -> str:
    """base/s1/s2/evil/etc: s1 and s2 lead ~2400 bytes deeper each, evil -> /."""
    deep = "/".join(["x" * 200] * 12)
    here = os.getcwd()
    try:
        os.chdir(base)
        os.makedirs(deep)
        os.chdir(deep)  # the second half only fits relative to the first
        os.makedirs(deep)
        os.symlink(deep, "s2")
        os.chdir(deep)
        os.symlink("/", "evil")
    finally:
        os.chdir(here)
    (base / "s1").symlink_to(f"{base}/{deep}")
    return f"{base}/s1/s2/evil/etc"


def _bind(kind: str, source: str) -> dict[str, Any]:
    if kind == "Binds":
        return {"Binds": [f"{source}:/x:ro"]}
    return {"Mounts": [{"Type": "bind", "Source": source, "Target": "/x", "ReadOnly": True}]}


CASES = [("Binds", "/etc"), ("Mounts", "/etc"), ("Binds", "/var/run/docker.sock")]


def _create(socket_path: str, image: str, label: str, host_config: dict[str, Any]) -> Any:
    return create_container(socket_path, image, ["true"], {"dmtest.redteam": label}, host_config)


@pytest.mark.host_namespaces  # reads where the host's paths lead
@pytest.mark.parametrize(("kind", "target"), CASES)
def test_raw_engine_mounts_the_lexically_cleaned_source(
    kind: str,
    target: str,
    tmp_path: Path,
    docker_host: str,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    source = _escape_source(tmp_path, target)
    if target == "/var/run/docker.sock":
        Path(os.path.realpath(source)).rmdir()  # Binds need nothing there
    status, answer = _create(socket_of(docker_host), busybox_image, unique_name("rt"),
                             _bind(kind, source))  # fmt: skip
    assert status == 201, answer
    containers.append(answer["Id"])
    mounts = docker_client.containers.get(answer["Id"]).attrs["Mounts"]
    assert [m["Source"] for m in mounts] == [target]  # the hole: a host path outside base


@pytest.mark.parametrize(("kind", "target"), CASES)
def test_gateway_refuses_a_source_that_escapes_through_link_dotdot(
    kind: str,
    target: str,
    gateway: Gateway,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    base = gateway.workspace / unique_name("rt")
    base.mkdir()
    source = _escape_source(base, target)
    label = unique_name("rt")
    status, answer = _create(str(gateway.socket), busybox_image, label, _bind(kind, source))
    if status == 201:
        containers.append(answer["Id"])
    assert status == 403, answer
    assert "containers.bind-mounts" in answer["message"]
    made = docker_client.containers.list(all=True, filters={"label": f"dmtest.redteam={label}"})
    assert made == []


def test_gateway_still_allows_a_plain_link_and_dotdot_inside_the_workspace(
    gateway: Gateway,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    base = gateway.workspace / unique_name("rt")
    (base / "a" / "b").mkdir(parents=True)
    (base / "a" / "marker").write_text("a")
    (base / "link").symlink_to(base / "a")
    status, answer = _create(str(gateway.socket), busybox_image, unique_name("rt"),
                             _bind("Binds", f"{base}/link/b/.."))  # fmt: skip
    assert status == 201, answer
    containers.append(answer["Id"])
    mounts = docker_client.containers.get(answer["Id"]).attrs["Mounts"]
    # dockerd mounts the pin of what `link/b/..` named when checked: base/a (test_bind_pins.py).
    (source,) = [m["Source"] for m in mounts]
    assert (Path(source) / "marker").read_text() == "a"


def _started(socket_path: str, image: str, label: str, source: str) -> Any:
    binds = {"Binds": [f"{source}:/x:ro"]}
    status, answer = create_container(
        socket_path, image, ["sleep", "30"], {"dmtest.redteam": label}, binds
    )
    if status == 201:
        call(socket_path, "POST", f"/v1.41/containers/{answer['Id']}/start")
    return status, answer


@pytest.mark.host_namespaces  # reads the host's /etc through the bind
def test_raw_engine_follows_a_symlink_chain_longer_than_path_max(
    tmp_path: Path,
    docker_host: str,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    source = _long_chain_source(tmp_path)
    assert os.path.realpath(source).startswith(str(tmp_path))  # what realpath believed
    status, answer = _started(socket_of(docker_host), busybox_image, unique_name("rt"), source)
    assert status == 201, answer
    containers.append(answer["Id"])
    seen = docker_client.containers.get(answer["Id"]).exec_run(["cat", "/x/hostname"]).output
    assert seen == Path("/etc/hostname").read_bytes()  # the host's /etc


def test_gateway_refuses_a_symlink_chain_it_cannot_resolve(
    gateway: Gateway,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    base = gateway.workspace / unique_name("rt")
    base.mkdir()
    label = unique_name("rt")
    status, answer = _started(str(gateway.socket), busybox_image, label, _long_chain_source(base))
    if status == 201:
        containers.append(answer["Id"])
    assert status == 403, answer
    assert "containers.bind-mounts" in answer["message"]
    made = docker_client.containers.list(all=True, filters={"label": f"dmtest.redteam={label}"})
    assert made == []
