"""The generated GitLab DinD job, run for real against a TLS nested daemon.

`dockmoat dind up` makes the nested daemon (TLS on, reachable as `docker:2376` on its
network, busybox preloaded since no registry exists). The job container gets what a
GitLab runner gives it: the generated file's variables, the client certificates at
/certs/client (the runner's shared `/certs/client` volume), the service network; it
then runs the generated `before_script` and `script` unchanged.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound

from dockmoat.ci.audit.yamlsrc import load
from dockmoat.ci.generate import Mode, Options, System, generate

pytestmark = pytest.mark.engine

DOCKMOAT = Path(sys.executable).parent / "dockmoat"
DOCKER = "/usr/local/bin/docker"
JOB_IMAGE = "dockmoat-test/dind:latest"  # carries sh and a docker CLI
BASE_IMAGE = "dockmoat-test/busybox:latest"


def _dockmoat(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOCKMOAT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_generated_gitlab_job_uses_the_nested_daemon_over_tls(
    docker_client: docker.DockerClient, docker_host: str, tmp_path: Path
) -> None:
    suffix = secrets.token_hex(4)
    name = f"dmtest-gen-{suffix}"
    text = generate(
        Options(
            system=System.GITLAB,
            mode=Mode.DIND,
            job_image=JOB_IMAGE,
            registry="registry.dmtest.invalid",
            image_name=name,
            test_command="cat /built",
            wait_seconds=30,
        )
    )
    doc = load(text)
    variables = {str(k): str(v) for k, v in doc["variables"].items()}
    job = doc["build"]
    lines = [*job["before_script"], *job["script"]]
    up = _dockmoat(
        "dind", "up", name, "--image", JOB_IMAGE, "--preload", BASE_IMAGE, "--format", "json"
    )
    assert up.returncode == 0, up.stderr
    daemon = json.loads(up.stdout)
    runner = f"{name}-job"
    try:
        # The file's own address for the daemon is the one dind up publishes on its network.
        assert variables["DOCKER_HOST"] == daemon["network_host"] == "tcp://docker:2376"
        workspace = tmp_path / "workspace"
        workspace.mkdir()
        (workspace / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nRUN echo built-by-{suffix} > /built\n"
        )
        env: list[str] = []
        for key, value in {**variables, "CI_COMMIT_SHORT_SHA": "abc123"}.items():
            env += ["-e", f"{key}={value}"]
        # GitLab expands variables that refer to others; IMAGE uses CI_COMMIT_SHORT_SHA.
        image = variables["IMAGE"].replace("$CI_COMMIT_SHORT_SHA", "abc123")
        env += ["-e", f"IMAGE={image}"]
        # Like GitLab: every line in one shell that stops at the first failure.
        script = "set -e\n" + "\n".join(str(line) for line in lines)
        proc = subprocess.run(
            [
                DOCKER,
                "run",
                "--name",
                runner,
                "--label",
                "dockmoat-test=generate",
                "--network",
                daemon["network"],
                "--entrypoint",
                "sh",
                "-v",
                f"{daemon['cert_path']}:/certs/client:ro",
                "-v",
                f"{workspace}:/workspace",
                "-w",
                "/workspace",
                *env,
                JOB_IMAGE,
                "-c",
                script,
            ],
            env={"DOCKER_HOST": docker_host, "PATH": "/usr/local/bin:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"built-by-{suffix}" in proc.stdout
        # The image was built by the nested daemon, not by the host's.
        certs = daemon["cert_path"]
        nested = subprocess.run(
            [
                DOCKER,
                "--tlsverify",
                f"--tlscacert={certs}/ca.pem",
                f"--tlscert={certs}/cert.pem",
                f"--tlskey={certs}/key.pem",
                "-H",
                daemon["host"],
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                image,
            ],
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert nested.returncode == 0 and nested.stdout.startswith("sha256:"), nested.stderr
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(image)
    finally:
        with contextlib.suppress(NotFound):
            docker_client.containers.get(runner).remove(force=True)
        down = _dockmoat("dind", "down", name)
        assert down.returncode == 0, down.stderr
