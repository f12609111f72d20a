"""Two jobs building with BuildKit at once on one `dockmoat serve`: their builds,
sessions, history and cache stay apart, and each job's images are its own."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound
from tenancy_helpers import Job

from dockmoat.api.engines import parse_api_version
from harness.clients import client

DOCKER = client("docker") or "docker"
BUILDKIT = {"DOCKER_BUILDKIT": "1"}


def dockerfile(folder: Path, image: str, word: str) -> Path:
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        f"FROM {image} AS base\nRUN --mount=type=cache,target=/c echo {word} > /w\n"
        f"FROM {image}\nCOPY --from=base /w /w\n"
    )
    return folder


def docker_cli(job: Job, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The current CLI on the job's socket, BuildKit on (the helpers' default is classic)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=job.docker_host, **BUILDKIT)
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, env=env, timeout=180, check=False
    )
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result


def raw(sock: str, request: bytes, *, keep: bool = False) -> tuple[bytes, socket.socket]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(sock)
    conn.sendall(request)
    head = conn.recv(65536)
    if not keep:
        conn.close()
    return head, conn


def history(job: Job) -> set[str]:
    listed = docker_cli(job, "buildx", "history", "ls")
    return {line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()}


def test_two_jobs_build_at_once_and_stay_apart(
    open_job: Callable[..., Job],
    tmp_path: Path,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    one, two = open_job("bka"), open_job("bkb")
    contexts = {
        job.name: dockerfile(tmp_path / job.name, busybox_image, job.name) for job in (one, two)
    }
    tags = {one.name: f"{one.name}-img:1", two.name: f"{two.name}-img:1"}
    errors: list[str] = []

    def run(job: Job) -> None:
        result = docker_cli(
            job, "build", "-t", tags[job.name], str(contexts[job.name]), check=False
        )
        if result.returncode != 0:
            errors.append(result.stderr)

    threads = [threading.Thread(target=run, args=(job,)) for job in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for job in (one, two):
        image = docker_client.images.get(tags[job.name])
        assert image.labels["dockmoat.tenant"] == job.name
    api = parse_api_version(docker_client.version()["ApiVersion"])
    assert api is not None
    if api <= (1, 41):
        # Engine 20.10's BuildKit keeps no build history: the engine itself says so.
        for job in (one, two):
            listed = docker_cli(job, "buildx", "history", "ls", check=False)
            assert listed.returncode != 0 and "ListenBuildHistory" in listed.stderr
    else:
        # each job's build history has only its own builds; another's is "not found"
        mine, theirs = history(one), history(two)
        assert mine and theirs and not mine & theirs
        other = sorted(mine)[0]
        inspected = docker_cli(two, "buildx", "history", "inspect", other, check=False)
        assert inspected.returncode != 0
        assert other not in inspected.stdout
    # the shared build cache: a job sees none of it and prunes nothing of it
    pruned = docker_cli(two, "builder", "prune", "-af")
    assert "Total:\t0B" in pruned.stdout or "Total: 0B" in pruned.stdout.replace("\t", " ")
    rebuilt = docker_cli(one, "build", "--progress=plain", str(contexts[one.name]))
    assert "CACHED" in rebuilt.stderr
    # closing a job removes the images its builds made
    one.close()
    with pytest.raises(NotFound):
        docker_client.images.get(tags[one.name])
    two.close()


def test_a_job_cannot_use_another_jobs_session(open_job: Callable[..., Job]) -> None:
    one, two = open_job("bks"), open_job("bkt")
    session = "dmtestsession" + one.name.rsplit("-", 1)[-1]
    opened = (
        b"POST /session HTTP/1.1\r\nHost: docker\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
        b"X-Docker-Expose-Session-Uuid: " + session.encode() + b"\r\n"
        b"X-Docker-Expose-Session-Name: dmtest\r\n\r\n"
    )
    head, held = raw(one.socket, opened, keep=True)
    try:
        assert head.startswith(b"HTTP/1.1 101"), head
        stolen, _ = raw(two.socket, opened)
        assert stolen.startswith(b"HTTP/1.1 403"), stolen
        assert b"tenancy.build-session" in stolen
        build = (
            b"POST /v1.41/build?version=2&remote=client-session&session="
            + session.encode()
            + b" HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
        )
        refused, _ = raw(two.socket, build)
        assert refused.startswith(b"HTTP/1.1 403"), refused
        assert b"tenancy.build-session" in refused
    finally:
        held.close()


DOCKER_20 = client("docker-20.10")


@pytest.mark.parametrize("cli", [pytest.param(DOCKER, id="buildx"),
                                 pytest.param(DOCKER_20, id="cli-20.10-buildkit")])  # fmt: skip
def test_a_job_cannot_build_from_another_jobs_image(
    cli: str | None,
    open_job: Callable[..., Job],
    busybox_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    """Through job sockets, with buildx (/grpc) and with the 20.10 CLI's BuildKit mode
    (/build?version=2, its Dockerfile read from the session): job B's FROM of job A's
    image is "No such image", as any other lookup of it."""
    assert cli is not None
    one, two = open_job("bkfa"), open_job("bkfb")

    def build(job: Job, folder: Path, tag: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=job.docker_host, **BUILDKIT)
        return subprocess.run([cli, "build", "-t", tag, str(folder)], capture_output=True,
                              text=True, env=env, timeout=180, check=False)  # fmt: skip

    ones, twos = f"{unique_name('ones')}:1", f"{unique_name('twos')}:1"
    made = tmp_path / "made"
    made.mkdir()
    (made / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo one > /one\n")
    built = build(one, made, ones)
    assert built.returncode == 0, built.stderr[-2000:]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "Dockerfile").write_text(f"FROM {ones}\nRUN cat /one\n")
    crossed = build(two, theirs, twos)
    assert crossed.returncode != 0
    assert f"No such image: {ones}" in crossed.stderr, crossed.stderr[-2000:]
    with pytest.raises(NotFound):
        docker_client.images.get(twos)
