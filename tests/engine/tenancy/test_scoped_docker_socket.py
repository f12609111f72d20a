"""A job container that binds the Docker socket gets its job's own guarded socket in
its place (issue 18, item 8): tools that drive Docker from a container (testcontainers'
Ryuk, CI helpers, dashboards) work, under the job's policy and tenancy, and see only
the job's things.

Shown on the raw engine first: a container binding the daemon's socket sees and
drives every container on the host. Then through a job socket: the same `docker run
-v /var/run/docker.sock:/var/run/docker.sock` sees the job's containers only, and what
it makes is the job's. A listener tenant (no socket of its own) is refused as before.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import docker
import pytest
from tenancy_helpers import Job, Serve

pytestmark = pytest.mark.host_namespaces  # binds a host path: the job's socket

DIND = "dockmoat-test/dind:latest"  # has the docker CLI
BIND_RUN = ("run", "--rm", "--network", "none", "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "--entrypoint", "docker")  # fmt: skip


def inner_docker(job_or_raw: Job | None, raw_host: str, *args: str) -> str:
    """`docker ARGS` run in a container that binds /var/run/docker.sock."""
    command = [*BIND_RUN, DIND, *args]
    if job_or_raw is None:
        result = subprocess.run(["docker", "-H", raw_host, *command], capture_output=True,
                                text=True, timeout=120, check=False)  # fmt: skip
    else:
        result = job_or_raw.docker(*command, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_job_container_binding_the_docker_socket_gets_the_jobs_socket(
    open_job: Callable[..., Job],
    docker_host: str,
    docker_client: docker.DockerClient,
    busybox_image: str,
) -> None:
    one, other = open_job("sock"), open_job("sockx")
    one.docker("create", "--name", "mine", busybox_image, "true")
    other.docker("create", "--name", "theirs", busybox_image, "true")
    # The crossing: bound to the daemon's socket, a container sees every container.
    raw = inner_docker(None, docker_host, "ps", "-a", "--format", "{{.Names}}").split()
    assert f"{other.name}--theirs" in raw and f"{one.name}--mine" in raw
    # Through the job: the job's containers only, by the job's names.
    seen = inner_docker(one, docker_host, "ps", "-a", "--format", "{{.Names}}").split()
    assert "mine" in seen
    assert not any("theirs" in name for name in seen), seen
    # What it makes is the job's, and the job's policy holds inside too.
    inner_docker(one, docker_host, "create", "--name", "made-inside", busybox_image, "true")
    made = docker_client.containers.get(f"{one.name}--made-inside")
    assert made.labels["dockmoat.tenant"] == one.name
    inner = ("run", "--rm", "--privileged", busybox_image, "true")
    refused = one.docker(*BIND_RUN, DIND, *inner, check=False)
    assert refused.returncode != 0 and "containers.privileged" in refused.stderr
    # The same bind through the raw socket path spelled another way: also the job's.
    for spelling in ("/run/docker.sock", "/var/run/../run/docker.sock"):
        result = one.docker("run", "--rm", "--network", "none", "-v",
                            f"{spelling}:/var/run/docker.sock", "--entrypoint", "docker", DIND,
                            "ps", "-a", "--format", "{{.Names}}", check=False)  # fmt: skip
        assert result.returncode == 0, (spelling, result.stderr)
        assert not any("theirs" in name for name in result.stdout.split())


def test_a_listener_tenant_binding_the_docker_socket_is_refused(
    serve: Serve, busybox_image: str
) -> None:
    listener = Job("main", f"unix://{serve.root / 'main.sock'}", serve)  # no socket of its own
    result = listener.docker("create", "-v", "/var/run/docker.sock:/var/run/docker.sock",
                                   busybox_image, "true", check=False)  # fmt: skip
    assert result.returncode != 0
    assert "containers.bind-mounts" in result.stderr, result.stderr
