"""`run`'s job image with an ENTRYPOINT: as in GitLab's Docker executor, the entrypoint
runs with COMMAND as its arguments (so an entrypoint script that ends in `exec "$@"`
prepares the job, and one that ignores its arguments ignores COMMAND too);
`--entrypoint ""` runs COMMAND itself, as GitHub Actions' container jobs and GitLab's
`entrypoint: [""]` do. Socket mode: the entrypoint does not depend on the mode."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from run_support import dockmoat_run

VARIANTS = {
    # Prepares the environment, then runs what it was given (the usual script).
    "exec-args": 'ENTRYPOINT ["/bin/sh", "-c", "export PREPARED=yes; exec \\"$@\\"", "entry"]',
    # Ignores its arguments, like a server image's entrypoint.
    "ignores-args": 'ENTRYPOINT ["echo", "the image entrypoint ran with:"]',
}


@pytest.fixture(scope="module")
def job_images(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, busybox_image: str
) -> Iterator[dict[str, str]]:
    tags: dict[str, str] = {}
    try:
        for key, line in VARIANTS.items():
            folder = tmp_path_factory.mktemp(f"job-{key}")
            (folder / "Dockerfile").write_text(f"FROM {busybox_image}\n{line}\n")
            tag = f"dmtest-job-ep-{key}:{secrets.token_hex(4)}"
            subprocess.run(
                ["docker", "build", "-q", "-t", tag, str(folder)],
                env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                capture_output=True,
                check=True,
            )
            tags[key] = tag
        yield tags
    finally:
        for tag in tags.values():
            docker_client.images.remove(tag)


COMMAND = ("sh", "-c", 'echo "job ran, prepared=${PREPARED:-no}"')


@pytest.mark.parametrize(
    ("key", "entrypoint", "out"),
    [
        ("exec-args", None, "job ran, prepared=yes\n"),
        ("exec-args", "", "job ran, prepared=no\n"),
        ("ignores-args", None, "the image entrypoint ran with: " + " ".join(COMMAND) + "\n"),
        ("ignores-args", "", "job ran, prepared=no\n"),
    ],
)
def test_job_entrypoint_and_command(
    key: str, entrypoint: str | None, out: str, job_images: dict[str, str], tmp_path: Path
) -> None:
    extra = () if entrypoint is None else ("--entrypoint", entrypoint)
    result = dockmoat_run(
        "--mode", "socket", "-q", "--image", job_images[key], "--workspace", str(tmp_path),
        *extra, "--", *COMMAND,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == out
