"""The job side of `generate compose --mode guarded`, run for real through `dockmoat serve`.

The generated runner's script (bounded wait, build, test) runs unchanged in a real
container whose only Docker access is the guarded socket mounted where the generated
file mounts it, with the DOCKER_HOST the file sets. (The dockmoat service itself is a
real `dockmoat serve` on the host here: no dockmoat image exists on this machine.)
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound, NotFound
from genguard import Guard

from dockmoat.ci.audit.yamlsrc import load
from dockmoat.ci.generate import Mode, Options, System, generate
from support.audit_file import settled_entries

pytestmark = pytest.mark.engine

JOB_IMAGE = "dockmoat-test/dind:latest"  # carries sh and a docker CLI
BASE_IMAGE = "dockmoat-test/busybox:latest"
DOCKER = "/usr/local/bin/docker"


def test_generated_runner_builds_and_tests_through_the_guard(
    guard: Guard, docker_client: docker.DockerClient, docker_host: str, tmp_path: Path
) -> None:
    suffix = secrets.token_hex(4)
    image = f"dmtest-gen-{suffix}:1"
    name = f"dmtest-gen-runner-{suffix}"
    text = generate(
        Options(
            system=System.COMPOSE,
            mode=Mode.GUARDED,
            job_image=JOB_IMAGE,
            test_command="cat /built",
            wait_seconds=20,
        )
    )
    runner = load(text)["services"]["runner"]
    docker_host_in_job = runner["environment"]["DOCKER_HOST"]
    socket_in_job = docker_host_in_job.removeprefix("unix://")
    # Compose would turn `$$` into `$` before the shell sees the script.
    script = str(runner["command"][2]).replace("$$", "$")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nRUN echo built-by-{suffix} > /built\n"
    )
    try:
        proc = subprocess.run(
            [
                DOCKER,
                "run",
                "--name",
                name,
                "--label",
                "dockmoat-test=generate",
                "--entrypoint",
                "sh",
                "-v",
                f"{guard.socket}:{socket_in_job}",
                "-v",
                f"{workspace}:/workspace",
                "-w",
                "/workspace",
                "-e",
                f"DOCKER_HOST={docker_host_in_job}",
                "-e",
                f"IMAGE={image}",
                JOB_IMAGE,
                "-c",
                script,
            ],
            env={"DOCKER_HOST": docker_host, "PATH": "/usr/local/bin:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"built-by-{suffix}" in proc.stdout
        # The image exists on the real engine, and it got there through the guard.
        assert docker_client.images.get(image).id
        entries = settled_entries(guard.audit_log)
        paths = {(e["method"], str(e["path"]).split("?")[0].split("/", 2)[-1]) for e in entries}
        assert ("POST", "build") in paths
        assert any(m == "POST" and p.endswith("containers/create") for m, p in paths)
    finally:
        for remove in (
            lambda: docker_client.containers.get(name).remove(force=True),
            lambda: docker_client.images.remove(image, force=True),
        ):
            with contextlib.suppress(NotFound, ImageNotFound):
                remove()
