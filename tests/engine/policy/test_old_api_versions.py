"""Old API versions: dockerd 20.10 still applies a HostConfig sent at container start.

The control case proves the hole on this very engine (raw socket) where the engine
still serves API 1.23 (20.10 serves down to 1.12); an engine whose MinAPIVersion is
1.24 or newer (28.5) answers 400 itself, and the control says so. Either way the
gateway must refuse the request, and the engine must show the container untouched.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import docker
import pytest
from policygw import Gateway
from rawdocker import call, engine_version, socket_of

DANGEROUS_START = json.dumps({"Privileged": True, "Binds": ["/etc:/hostetc"]}).encode()


@pytest.fixture
def created(
    gateway: Gateway,
    busybox_image: str,
    unique_name: Callable[[str], str],
    docker_client: docker.DockerClient,
) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def create(socket_path: str) -> str:
        body = {"Image": busybox_image, "Cmd": ["sleep", "30"],
                "Labels": {"dmtest.label": unique_name("oldapi")}}  # fmt: skip
        status, answer = call(socket_path, "POST", "/v1.41/containers/create",
                              json.dumps(body).encode())  # fmt: skip
        assert status == 201, answer
        made.append(answer["Id"])
        return str(answer["Id"])

    yield create
    for container_id in made:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(container_id).remove(force=True)


def test_raw_engine_applies_a_hostconfig_at_start_with_api_1_23(
    created: Callable[[str], str], docker_host: str, docker_client: docker.DockerClient
) -> None:
    raw = socket_of(docker_host)
    engine = engine_version(raw)
    container_id = created(raw)
    status, answer = call(raw, "POST", f"/v1.23/containers/{container_id}/start", DANGEROUS_START)
    attrs = docker_client.containers.get(container_id).attrs
    if engine.min_api > (1, 23):
        # No hole on this engine: it refuses API 1.23 itself (the gateway test below
        # still checks that the guard refuses it, for engines that do not).
        assert status == 400, answer
        assert "too old" in str(answer), answer  # 28.5 answers it as plain text
        assert attrs["HostConfig"]["Privileged"] is False
        return
    assert status == 204
    assert attrs["HostConfig"]["Privileged"] is True  # the hole the rule closes


@pytest.mark.parametrize("version", ["1.23", "1.12", "01.023", "1.4.1"])
def test_gateway_refuses_old_versions_and_the_container_is_untouched(
    version: str,
    created: Callable[[str], str],
    gateway: Gateway,
    docker_client: docker.DockerClient,
) -> None:
    container_id = created(str(gateway.socket))
    status, answer = call(
        str(gateway.socket), "POST", f"/v{version}/containers/{container_id}/start",
        DANGEROUS_START,
    )  # fmt: skip
    assert status == 403
    assert "system.api-version" in answer["message"]
    attrs = docker_client.containers.get(container_id).attrs
    assert attrs["HostConfig"]["Privileged"] is False
    assert not attrs["HostConfig"]["Binds"]
    assert attrs["State"]["Running"] is False


def test_gateway_starts_with_a_current_version(
    created: Callable[[str], str], gateway: Gateway, docker_client: docker.DockerClient
) -> None:
    container_id = created(str(gateway.socket))
    status, _ = call(str(gateway.socket), "POST", f"/v1.24/containers/{container_id}/start")
    assert status == 204
    attrs = docker_client.containers.get(container_id).attrs
    assert attrs["State"]["Running"] is True
    assert attrs["HostConfig"]["Privileged"] is False
