"""Fixtures shared by the whole suite, and the `engine` marker for tests/engine/.

Engine tests never skip: when no engine answers they fail, saying to run
`scripts/test-engine up` (which `make test` runs). Every engine test must create
uniquely named resources (`unique_name`) and clean up only what it created:
other tests and people use the same engine at the same time.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException, ImageNotFound
from hypothesis import HealthCheck, settings

from harness import images, nested, rootless
from harness.daemon import Paths
from harness.endpoint import Endpoint
from harness.images import BUSYBOX_IMAGE, DIND_IMAGE

# Property tests check correctness, not speed (speed lives in bench/): on a loaded
# 2-core CI machine Hypothesis' per-example deadline only produces false failures.
settings.register_profile("dockmoat", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("dockmoat")

ENGINE_TESTS = Path(__file__).resolve().parent / "engine"
HOW_TO_START = "run `scripts/test-engine up` (make test does it for you)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/engine/ needs the engine, whether or not it says so."""
    for item in items:
        if ENGINE_TESTS in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.engine)


@pytest.fixture(autouse=True)
def _host_namespaces_only_on_the_host(request: pytest.FixtureRequest) -> None:
    """A `host_namespaces` test run against a nested engine of the matrix fails at once:
    the folders it binds and the loopback it listens on are not that engine's."""
    if request.node.get_closest_marker("host_namespaces") is None:
        return
    path = Endpoint.from_env().unix_path
    if path is not None and nested.record_path(Paths()).parent / "engines" in Path(path).parents:
        pytest.fail(
            f"{request.node.nodeid} needs the host's mount and network namespaces, and "
            f"{path} is a nested engine: deselect it with -m 'not host_namespaces'"
        )


@pytest.fixture(scope="session")
def engine_endpoint() -> Endpoint:
    """The engine under test: DOCKER_HOST, else unix:///var/run/docker.sock."""
    return Endpoint.from_env()


@pytest.fixture(scope="session")
def docker_host(engine_endpoint: Endpoint) -> str:
    """The engine's URL as DOCKER_HOST spells it, for tests that drive the docker CLI."""
    if not engine_endpoint.ping():
        pytest.fail(f"no Docker engine answers at {engine_endpoint.url}: {HOW_TO_START}")
    return engine_endpoint.url


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    """A docker SDK client for the engine under test (session scope)."""
    try:
        client = docker.DockerClient(base_url=docker_host, version="auto", timeout=120)
        client.ping()
    except DockerException as exc:
        pytest.fail(f"cannot talk to the Docker engine at {docker_host} ({exc}): {HOW_TO_START}")
    yield client
    client.close()


def _local_image(client: docker.DockerClient, tag: str) -> str:
    try:
        client.images.get(tag)
    except ImageNotFound:
        pytest.fail(f"the test image {tag} is missing: {HOW_TO_START}")
    return tag


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """Tag of the local busybox image (sh, /tmp, /etc/passwd); never pulled."""
    return _local_image(docker_client, BUSYBOX_IMAGE)


@pytest.fixture(scope="session")
def dind_image(docker_client: docker.DockerClient) -> str:
    """Tag of the local DinD image (the host's dockerd & co., entrypoint `dind`, CMD dockerd)."""
    return _local_image(docker_client, DIND_IMAGE)


@pytest.fixture(scope="session")
def rootless_dind_image(docker_client: docker.DockerClient) -> str:
    """Tag of the local rootless DinD image (harness.images), built here when its inputs
    changed. Skips only where a rootless dockerd cannot exist (no user namespaces)."""
    reason = rootless.no_userns_reason()
    if reason is not None:
        pytest.skip(f"rootless DinD cannot run on this machine: {reason}")
    try:
        rootless.ensure_tun(print)
        return rootless.ensure_image("docker", print)
    except (rootless.RootlessSetupError, images.ImageBuildError) as exc:
        pytest.fail(f"rootless DinD set-up failed: {exc}")


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """`unique_name("vol")` -> "dmtest-vol-3f9a0c1b": a fresh name per call, for any resource."""

    def make(prefix: str = "t") -> str:
        return f"dmtest-{prefix}-{secrets.token_hex(4)}"

    return make
