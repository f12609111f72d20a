"""Block-I/O throttles name host devices by path: dockerd stats the path on the host
when the container starts, so its answer tells a job whether any host path exists.
Shown on the raw engine, then refused through the guard (nothing created)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from policygw import Gateway
from rawdocker import call, create_container, socket_of

# the probe reads the host's own files: the nested engines of the matrix have their own
pytestmark = [pytest.mark.engine, pytest.mark.host_namespaces]


def _start_error(socket_path: str, container_id: str) -> str:
    status, answer = call(socket_path, "POST", f"/v1.41/containers/{container_id}/start")
    assert status >= 400, answer
    return str(answer.get("message", ""))


def test_a_throttle_path_probes_the_host_and_is_refused_through_the_guard(
    gateway: Gateway,
    tmp_path: Path,
    docker_host: str,
    busybox_image: str,
    unique_name: Callable[[str], str],
    containers: list[str],
    docker_client: docker.DockerClient,
) -> None:
    secret = tmp_path / "only-on-the-host"
    secret.write_text("x")
    raw = socket_of(docker_host)
    answers = []
    for path in (str(secret), str(tmp_path / "absent")):
        limits = {"BlkioDeviceReadBps": [{"Path": path, "Rate": 1048576}]}
        status, made = create_container(raw, busybox_image, ["true"], {}, limits)
        assert status == 201, made
        containers.append(made["Id"])
        answers.append(_start_error(raw, made["Id"]))
    # The hole: a file that exists and one that does not answer differently.
    assert answers[0] != answers[1] and "no such file" in answers[1].lower()

    label = unique_name("blkio")
    limits = {"BlkioDeviceReadBps": [{"Path": str(secret), "Rate": 1048576}]}
    status, answer = create_container(str(gateway.socket), busybox_image, ["true"],
                                      {"dmtest.blkio": label}, limits)  # fmt: skip
    if status == 201:
        containers.append(answer["Id"])
    assert status == 403, answer
    assert "containers.resource-bounds" in answer["message"]
    made = docker_client.containers.list(all=True, filters={"label": f"dmtest.blkio={label}"})
    assert made == []
    # A real device goes through (the throttle is the container's own limit).
    status, answer = create_container(
        str(gateway.socket), busybox_image, ["true"], {"dmtest.blkio": label},
        {"BlkioDeviceReadBps": [{"Path": "/dev/null", "Rate": 1048576}]},
    )  # fmt: skip
    if status == 201:
        containers.append(answer["Id"])
    assert status == 201, answer
