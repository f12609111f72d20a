"""Fixtures of the nested-engine matrix: `nested` (a `dockmoat dind up` per engine
version, module-scoped) and `guarded` (a `dockmoat serve` in front of it over mTLS)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import docker
import pytest
from matrix_support import Guard, Nested, guard_up, matrix_versions, nested_down, nested_up

from harness.images import dind_tag

VERSIONS = matrix_versions()


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"engine-{v}" for v in VERSIONS])
def nested(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
) -> Iterator[Nested]:
    version: str = request.param
    try:
        docker_client.images.get(dind_tag(version))
    except docker.errors.ImageNotFound:
        pytest.fail(f"{dind_tag(version)} is missing: run scripts/test-engine up")
    engine = nested_up(version, tmp_path_factory.mktemp(f"mx{version}"))
    try:
        yield engine
    finally:
        nested_down(engine)


@pytest.fixture(scope="module")
def guarded(nested: Nested, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    """The default serve (baseline, its listener a tenant) in front of `nested`."""
    guard = guard_up(
        nested, tmp_path_factory.mktemp("guard"), "--tenant", f"mx{secrets.token_hex(3)}"
    )
    yield guard
    assert guard.stop() == 0
