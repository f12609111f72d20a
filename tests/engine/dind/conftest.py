"""Fixtures for dind engine tests: a private state dir and docker config per test,
and a manager that removes every daemon the test started."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from dindtest_support import Dind


@pytest.fixture
def dind(tmp_path: Path, docker_client: docker.DockerClient, dind_image: str) -> Iterator[Dind]:
    helper = Dind(tmp_path, docker_client, dind_image)
    yield helper
    helper.cleanup()


@pytest.fixture
def dind_name(unique_name: Callable[[str], str]) -> Callable[[], str]:
    return lambda: unique_name("dind")
