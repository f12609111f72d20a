"""A `# syntax=` build with a real local frontend (`dockmoat-test/frontend:latest`,
harness.frontend) through a job socket: it builds as on the raw socket and the job runs
its image. The guard marks a build's image as the job's with the frontend attribute
`label:dockmoat.tenant`, which only the Dockerfile frontend honours; a custom frontend's
image carries no label, and is the job's by the tag its build exported (recorded when
the Solve ended): `job close` removes it all the same."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound
from tenancy_helpers import Job

from harness import frontend
from harness.clients import client
from support.docker_cli import build

DOCKER = client("docker") or "docker"


@pytest.fixture
def built_through_a_job(
    open_job: Callable[..., Job],
    frontend_image: str,
    docker_host: str,
    busybox_image: str,
    tmp_path: Path,
    tags: list[str],
) -> Callable[[str], tuple[Job, str]]:
    """Opens a job named from `prefix`, builds on the raw socket and through the job; the
    job and its tag, same content."""

    def built(prefix: str) -> tuple[Job, str]:
        job = open_job(prefix)
        (tmp_path / "Dockerfile").write_text(
            f"# syntax={frontend_image}\nFROM {busybox_image}\nRUN echo {job.name} > /who\n"
        )
        raw_tag, tag = f"{job.name}-raw:1", f"{job.name}-img:1"
        tags.extend([raw_tag, tag])
        raw = build(DOCKER, docker_host, "build", "-t", raw_tag, ".", cwd=tmp_path)
        assert raw.returncode == 0, raw.stderr
        guarded = build(DOCKER, job.docker_host, "build", "-t", tag, ".", cwd=tmp_path)
        assert guarded.returncode == 0, guarded.stderr
        check = ["sh", "-c", "cat /who /frontend"]
        expected = f"{job.name}\n{frontend.MARKER}\n"
        with contextlib.closing(docker.DockerClient(base_url=docker_host)) as client:
            assert client.containers.run(raw_tag, check, remove=True).decode() == expected
            assert client.containers.run(tag, check, remove=True).decode() == expected
        return job, tag

    return built


def test_a_local_frontend_builds_through_a_job_socket(
    built_through_a_job: Callable[[str], tuple[Job, str]], tmp_path: Path
) -> None:
    job, tag = built_through_a_job("bkfe")
    ran = build(DOCKER, job.docker_host, "run", "--rm", tag, "cat", "/who", cwd=tmp_path)
    assert ran.stdout == job.name + "\n", ran.stderr
    removed = build(DOCKER, job.docker_host, "rmi", tag, cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr


def test_closing_the_job_removes_its_local_frontend_image(
    built_through_a_job: Callable[[str], tuple[Job, str]], docker_client: docker.DockerClient
) -> None:
    job, tag = built_through_a_job("bkfc")
    job.close()
    with pytest.raises(NotFound):
        docker_client.images.get(tag)
