"""A `# syntax=` build with a real local frontend (`dockmoat-test/frontend:latest`,
harness.frontend) through a job socket: it builds as on the raw socket and the job runs
its image. The guard marks a build's image as the job's with the frontend attribute
`label:dockmoat.tenant`, which only the Dockerfile frontend honours; a custom frontend's
image carries no label, and is the job's by the tag its build exported (recorded when
the Solve ended): `job close` removes it all the same."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound, NotFound
from tenancy_helpers import Job

from harness import frontend, images
from harness.clients import client

DOCKER = client("docker") or "docker"


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
    made: list[str] = []
    yield made
    for name in made:
        with contextlib.suppress(NotFound):
            docker_client.images.remove(name, force=True)


def build(host: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=host, DOCKER_BUILDKIT="1")
    return subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180,
        check=False,
    )  # fmt: skip


def built_through_a_job(
    job: Job, image: str, busybox_image: str, docker_host: str, tmp_path: Path, tags: list[str]
) -> str:
    """Builds on the raw socket and through the job; the job's tag, same content."""
    (tmp_path / "Dockerfile").write_text(
        f"# syntax={image}\nFROM {busybox_image}\nRUN echo {job.name} > /who\n"
    )
    raw_tag, tag = f"{job.name}-raw:1", f"{job.name}-img:1"
    tags += [raw_tag, tag]
    raw = build(docker_host, "build", "-t", raw_tag, ".", cwd=tmp_path)
    assert raw.returncode == 0, raw.stderr
    guarded = build(job.docker_host, "build", "-t", tag, ".", cwd=tmp_path)
    assert guarded.returncode == 0, guarded.stderr
    check = ["sh", "-c", "cat /who /frontend"]
    expected = f"{job.name}\n{frontend.MARKER}\n"
    with contextlib.closing(docker.DockerClient(base_url=docker_host)) as client:
        assert client.containers.run(raw_tag, check, remove=True).decode() == expected
        assert client.containers.run(tag, check, remove=True).decode() == expected
    return tag


def test_a_local_frontend_builds_through_a_job_socket(
    open_job: Callable[..., Job],
    frontend_image: str,
    docker_host: str,
    busybox_image: str,
    tmp_path: Path,
    tags: list[str],
) -> None:
    job = open_job("bkfe")
    tag = built_through_a_job(job, frontend_image, busybox_image, docker_host, tmp_path, tags)
    ran = build(job.docker_host, "run", "--rm", tag, "cat", "/who", cwd=tmp_path)
    assert ran.stdout == job.name + "\n", ran.stderr
    removed = build(job.docker_host, "rmi", tag, cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr


def test_closing_the_job_removes_its_local_frontend_image(
    open_job: Callable[..., Job],
    frontend_image: str,
    docker_host: str,
    busybox_image: str,
    tmp_path: Path,
    tags: list[str],
    docker_client: docker.DockerClient,
) -> None:
    job = open_job("bkfc")
    tag = built_through_a_job(job, frontend_image, busybox_image, docker_host, tmp_path, tags)
    job.close()
    with pytest.raises(NotFound):
        docker_client.images.get(tag)
