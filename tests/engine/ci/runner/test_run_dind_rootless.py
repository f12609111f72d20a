"""examples/pipeline, unchanged, through `dockmoat run --mode dind --rootless`: the seed's
complete pipeline (build, test in the image, tag) against a rootless nested daemon."""

from __future__ import annotations

import docker
import pytest
from run_support import JOB_IMAGE, PIPELINE, assert_nothing_left, dockmoat_run, snapshot

DEFAULT_TAGS = ("myapp:ci", "registry.example.com/myapp:ci")


@pytest.mark.slow  # a cold rootless daemon and the whole pipeline: ~15-30 s here
def test_pipeline_in_rootless_dind_mode(
    docker_client: docker.DockerClient, rootless_dind_image: str, busybox_image: str
) -> None:
    before = snapshot(docker_client, DEFAULT_TAGS)
    result = dockmoat_run(
        "--mode", "dind", "--rootless", "--dind-image", rootless_dind_image,
        "--preload", busybox_image, "--image", JOB_IMAGE, "--workspace", str(PIPELINE),
        "--", "sh", "-c", "docker info --format 'security: {{.SecurityOptions}}' && sh pipeline.sh",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "name=rootless" in result.stdout  # the job's daemon is the rootless one
    assert "== docker: tcp://docker:2376" in result.stdout
    assert "== build" in result.stdout and "tests passed" in result.stdout
    assert "pipeline ok: registry.example.com/myapp:ci" in result.stdout
    assert "dockmoat run: mode dind, exit 0; set-up " in result.stderr
    assert_nothing_left(docker_client, before, DEFAULT_TAGS)


def test_rootless_is_refused_outside_dind_mode() -> None:
    result = dockmoat_run("--mode", "socket", "--rootless", "--image", JOB_IMAGE, "--", "true")
    assert result.returncode == 2, result.stderr
    assert "only with --mode dind" in result.stderr
