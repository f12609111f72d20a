"""A real `dockmoat serve` (baseline, one allowed workspace) in front of the real engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import pytest
from policygw import Gateway, start_gateway, stop


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Gateway]:
    served, process = start_gateway(tmp_path_factory.mktemp("policy-gw"), docker_host)
    yield served
    stop(process)


@pytest.fixture
def containers(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Ids of containers a test made; removed (forced) after it."""
    made: list[str] = []
    yield made
    for container_id in made:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(container_id).remove(force=True)
