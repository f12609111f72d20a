"""The local test images work on the real engine, and nothing can be pulled."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound

from harness.hosts_file import HUB_HOSTS

CLIENTS = [c for c in ("/usr/local/bin/docker", "/usr/bin/docker") if os.access(c, os.X_OK)]
LABEL = "dockmoat-test=harness"


def cli(
    docker_host: str, *args: str, client: str = "docker", stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DOCKER_HOST": docker_host}
    return subprocess.run(
        [client, *args], input=stdin, capture_output=True, env=env, timeout=240, check=False
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_busybox_image_runs_with_tmp_and_passwd(
    docker_host: str, busybox_image: str, client: str
) -> None:
    script = "stat -c '%a %U' /tmp; cat /etc/passwd; id -un; id -un nobody"
    result = cli(
        docker_host,
        *("run", "--rm", "--pull", "never", "--label", LABEL, busybox_image, "sh", "-c", script),
        client=client,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "1777 root"
    assert any(line.startswith("root:x:0:0:") for line in lines)
    assert any(line.startswith("nobody:x:65534:65534:") for line in lines)
    assert lines[-2:] == ["root", "nobody"]


def test_privileged_container_runs(docker_host: str, busybox_image: str) -> None:
    """What DinD needs; on kernels without CAP_SYS_RESOURCE this relies on the harness."""
    result = cli(
        docker_host,
        *("run", "--rm", "--privileged", "--pull", "never", "--label", LABEL, busybox_image),
        *("sh", "-c", "mkdir /m && mount -t tmpfs none /m && echo mounted"),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "mounted"


@pytest.fixture
def nested_daemon(
    docker_client: docker.DockerClient, dind_image: str, unique_name: Callable[[str], str]
) -> Iterator[str]:
    """A privileged DinD container running dockerd on a named volume; removed afterwards."""
    volume = docker_client.volumes.create(unique_name("dind-data"), labels={"dockmoat-test": "1"})
    name = unique_name("dind")
    try:
        docker_client.containers.run(
            dind_image,
            name=name,
            detach=True,
            privileged=True,
            labels={"dockmoat-test": "harness"},
            volumes={volume.name: {"bind": "/var/lib/docker", "mode": "rw"}},
        )
        yield name
    finally:
        with contextlib.suppress(NotFound):
            docker_client.containers.get(name).remove(force=True, v=True)
        volume.remove(force=True)


def wait_nested(docker_host: str, container: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    last = b""
    while time.monotonic() < deadline:
        result = cli(docker_host, "exec", container, "docker", "info", "--format", "{{.Driver}}")
        if result.returncode == 0:
            return result.stdout.decode().strip()
        last = result.stderr
        time.sleep(0.5)
    logs = cli(docker_host, "logs", "--tail", "30", container)
    pytest.fail(
        f"nested dockerd did not answer within {timeout:.0f}s: {last.decode()}\n"
        f"{(logs.stdout + logs.stderr).decode()}"
    )


def test_dind_image_runs_a_nested_daemon_that_runs_busybox(
    docker_host: str,
    docker_client: docker.DockerClient,
    busybox_image: str,
    nested_daemon: str,
) -> None:
    assert wait_nested(docker_host, nested_daemon) == "overlay2"

    # Stream the host's image into the nested daemon: no registry anywhere.
    saved = cli(docker_host, "save", busybox_image)
    assert saved.returncode == 0, saved.stderr.decode()
    loaded = cli(docker_host, "exec", "-i", nested_daemon, "docker", "load", stdin=saved.stdout)
    assert loaded.returncode == 0, loaded.stderr.decode()
    assert busybox_image in loaded.stdout.decode()

    ran = cli(
        docker_host,
        *("exec", nested_daemon, "docker", "run", "--rm", "--pull", "never", busybox_image),
        *("sh", "-c", "echo nested:$(id -u):$(ls -d /tmp)"),
    )
    assert ran.returncode == 0, ran.stderr.decode()
    assert ran.stdout.decode().strip() == "nested:0:/tmp"

    # The nested daemon is a real, separate engine: the host does not see its containers.
    nested_ids = cli(docker_host, "exec", nested_daemon, "docker", "ps", "-aq", "--no-trunc")
    host_ids = {c.id for c in docker_client.containers.list(all=True)}
    assert not set(nested_ids.stdout.decode().split()) & host_ids


def test_hub_names_resolve_to_loopback() -> None:
    hosts = Path("/etc/hosts").read_text().splitlines()
    for name in HUB_HOSTS:
        assert any(line.split()[:2] == ["127.0.0.1", name] for line in hosts if line.strip())


@pytest.mark.parametrize("ref", ["registry-1.docker.io/library/alpine:3.19", "alpine:3.19"])
def test_an_accidental_pull_fails(
    docker_host: str, docker_client: docker.DockerClient, ref: str
) -> None:
    result = cli(docker_host, "pull", ref)
    assert result.returncode != 0
    # Refused on loopback by the /etc/hosts mapping, not some remote failure.
    assert "127.0.0.1" in result.stderr.decode()
    assert docker_client.images.list(name=ref.split(":")[0]) == []
