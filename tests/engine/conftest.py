"""Fixtures shared by the engine tests of more than one folder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import pytest
from docker.errors import ImageNotFound, NotFound

from harness import frontend, images


@pytest.fixture(scope="module")
def frontend_image(docker_client: docker.DockerClient) -> str:
    """`dockmoat-test/frontend:latest`, built here if `scripts/test-engine up` has not."""
    try:
        docker_client.images.get(frontend.FRONTEND_IMAGE)
    except ImageNotFound:
        try:
            images.ensure_image(frontend.frontend_spec(print), "docker", print)
        except images.ImageBuildError as exc:
            pytest.skip(f"the test frontend cannot be built here: {str(exc).splitlines()[0]}")
    return frontend.FRONTEND_IMAGE


@pytest.fixture
def tags(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Image tags a test made, removed (forced) when it ends."""
    made: list[str] = []
    yield made
    for tag in made:
        with contextlib.suppress(NotFound):
            docker_client.images.remove(tag, force=True)
