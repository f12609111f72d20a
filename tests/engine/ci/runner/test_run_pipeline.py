"""examples/pipeline, unchanged, in every mode of `dockmoat run`, on the real engine."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from pathlib import Path

import docker
from run_support import (
    JOB_IMAGE,
    PIPELINE,
    Snapshot,
    assert_nothing_left,
    dockmoat_run,
    snapshot,
)

DEFAULT_TAGS = ("myapp:ci", "registry.example.com/myapp:ci")


def _run_pipeline(
    mode: str, *options: str, workspace: Path = PIPELINE
) -> subprocess.CompletedProcess[str]:
    """`dockmoat run` of the pipeline's own script, unchanged, in `workspace`."""
    return dockmoat_run(
        "--mode",
        mode,
        "--image",
        JOB_IMAGE,
        *options,
        "--workspace",
        str(workspace),
        "--",
        "sh",
        "pipeline.sh",
    )


def _assert_pipeline_ran(stdout: str, stderr: str, mode: str, registry_image: str) -> None:
    assert "== build" in stdout
    assert "tests passed" in stdout
    assert f"pipeline ok: {registry_image}" in stdout
    assert f"dockmoat run: mode {mode}, exit 0; set-up " in stderr


def test_pipeline_in_socket_mode(docker_client: docker.DockerClient, dind_image: str) -> None:
    suffix = secrets.token_hex(4)
    image, registry_image = f"dmtest-myapp:{suffix}", f"registry.example.com/dmtest-myapp:{suffix}"
    before = snapshot(docker_client, (image, registry_image))
    result = _run_pipeline(
        "socket", "-e", f"IMAGE={image}", "-e", f"REGISTRY_IMAGE={registry_image}"
    )
    try:
        assert result.returncode == 0, result.stderr
        _assert_pipeline_ran(result.stdout, result.stderr, "socket", registry_image)
        assert "root on this host" in result.stderr
        left = snapshot(docker_client, (image, registry_image)).minus(before)
        # The raw socket keeps what the job made on the host: exactly its two tags, and no
        # container (the job container is removed; the test container ran with --rm).
        assert left == Snapshot(images=frozenset({image, registry_image})), left
        assert not docker_client.containers.list(all=True, filters={"ancestor": image})
    finally:
        for tag in (registry_image, image):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(tag)


def test_pipeline_in_dind_mode(
    docker_client: docker.DockerClient, dind_image: str, busybox_image: str
) -> None:
    before = snapshot(docker_client, DEFAULT_TAGS)
    result = _run_pipeline("dind", "--dind-image", dind_image, "--preload", busybox_image)
    assert result.returncode == 0, result.stderr
    _assert_pipeline_ran(result.stdout, result.stderr, "dind", "registry.example.com/myapp:ci")
    assert "DOCKER_HOST" not in result.stderr  # no socket warning in this mode
    assert "== docker: tcp://docker:2376" in result.stdout
    left = snapshot(docker_client, DEFAULT_TAGS).minus(before)
    assert left.empty(), left


def test_pipeline_in_guarded_mode(docker_client: docker.DockerClient, control_socket: Path) -> None:
    before = snapshot(docker_client, DEFAULT_TAGS)
    result = _run_pipeline("guarded", "--control", str(control_socket))
    assert result.returncode == 0, result.stderr
    _assert_pipeline_ran(result.stdout, result.stderr, "guarded", "registry.example.com/myapp:ci")
    assert "== docker: unix:///var/run/docker.sock" in result.stdout
    left = snapshot(docker_client, DEFAULT_TAGS).minus(before)
    assert left.empty(), left
    # The job socket is gone with the job.
    assert not list((control_socket.parent / "jobs").glob("run-*.sock"))


def test_a_broken_app_fails_the_pipeline_and_its_run(
    docker_client: docker.DockerClient, dind_image: str, busybox_image: str, tmp_path: Path
) -> None:
    workspace = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, workspace)
    (workspace / "app.sh").write_text('#!/bin/sh\necho "goodbye"\n')
    before = snapshot(docker_client, DEFAULT_TAGS)
    result = _run_pipeline(
        "dind", "--dind-image", dind_image, "--preload", busybox_image, workspace=workspace
    )
    assert result.returncode == 1, result.stderr
    assert "FAIL - (no name): got 'goodbye', want 'hello, world'" in result.stdout
    assert "pipeline ok" not in result.stdout
    assert "dockmoat run: mode dind, exit 1;" in result.stderr
    assert_nothing_left(docker_client, before, DEFAULT_TAGS)
