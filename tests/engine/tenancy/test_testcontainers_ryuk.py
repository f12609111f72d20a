"""testcontainers-python runs through a job socket with Ryuk on, and Ryuk reaps only the
job's things (issue 18, item 8).

Ryuk is the real one, moby-ryuk 0.5.1 built from its source (harness.ryuk,
`dockmoat-test/ryuk:0.5.1`); testcontainers is the PyPI package. A session runs in a
process of its own (testcontainers_session.py), configured only by its environment:

- `DOCKER_HOST=unix://<job socket>`;
- `TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE=/var/run/docker.sock` (testcontainers' advice
  when DOCKER_HOST is not the daemon's own socket; without it testcontainers binds the
  job socket's own path, also allowed): Ryuk's bind is replaced by the job's socket;
- Ryuk privileged off (`TESTCONTAINERS_RYUK_PRIVILEGED=false`, the default);
- ports: the job's policy publishes on 127.0.0.1 only (`containers.published-ports`),
  so `TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1`, and `TESTCONTAINERS_CONNECTION_MODE=
  docker_host` (in a container testcontainers would otherwise try the gateway's address).

The session is then killed, as a CI runner kills a test run: no clean-up of its own
runs, its connection to Ryuk closes, and Ryuk prunes by the session's label. Through
the job, that removes the job's labelled container and nothing else: the same label on
another job's container and on one made on the raw engine is out of Ryuk's sight. The
control: the same session on the raw engine's socket reaps the other job's container too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import ImageNotFound, NotFound
from tenancy_helpers import Job

from harness import images, ryuk

pytestmark = pytest.mark.host_namespaces  # binds the job's host socket, reaches the loopback

SESSION = Path(__file__).with_name("testcontainers_session.py")
SESSION_LABEL = "org.testcontainers.session-id"
SOCKET_IN_CONTAINER = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def ryuk_image(docker_client: docker.DockerClient) -> str:
    """`dockmoat-test/ryuk:0.5.1`, built from source if `scripts/test-engine up` has not."""
    try:
        docker_client.images.get(ryuk.RYUK_IMAGE)
    except ImageNotFound:
        images.ensure_image(ryuk.ryuk_spec(print), "docker", print)
    return ryuk.RYUK_IMAGE


def session_env(docker_host: str, ryuk_image: str, socket_override: str | None) -> dict[str, str]:
    prefixes = ("DOCKER_", "TESTCONTAINERS_", "RYUK_", "TC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        DOCKER_HOST=docker_host,
        RYUK_CONTAINER_IMAGE=ryuk_image,
        RYUK_RECONNECTION_TIMEOUT="1s",  # reap one second after the session's connection closes
        TESTCONTAINERS_RYUK_PRIVILEGED="false",
        TESTCONTAINERS_HOST_OVERRIDE="127.0.0.1",
        TESTCONTAINERS_CONNECTION_MODE="docker_host",
    )
    if socket_override is not None:
        env["TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE"] = socket_override
    return env


@contextmanager
def running_session(
    env: dict[str, str], image: str, log: Path
) -> Iterator[tuple[dict[str, Any], Callable[[], None]]]:
    """A running session's report, and a `kill` that SIGKILLs it."""
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, str(SESSION), image],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            text=True,
        )
    assert proc.stdout is not None

    def kill() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    try:
        line = proc.stdout.readline()  # the session prints its report once it is up
        assert line, f"the testcontainers session failed:\n{log.read_text()[-4000:]}"
        yield json.loads(line), kill
    finally:
        kill()


def wait_gone(client: docker.DockerClient, container_ids: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    left = list(container_ids)
    while left:
        left = [cid for cid in left if exists(client, cid)]
        if left and time.monotonic() > deadline:
            raise AssertionError(f"still on the engine after {timeout}s: {left}")
        time.sleep(0.3)


def exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except NotFound:
        return False
    return True


def decoy(job: Job, session: str, image: str) -> str:
    """Another job's container carrying the session's label; its id on the engine."""
    out = job.docker("create", "--label", f"{SESSION_LABEL}={session}", image, "true").stdout
    return out.strip()


@pytest.mark.parametrize("socket_override", [SOCKET_IN_CONTAINER, None])
def test_testcontainers_with_ryuk_through_a_job_socket_reaps_only_the_jobs(
    socket_override: str | None,
    open_job: Callable[..., Job],
    docker_client: docker.DockerClient,
    busybox_image: str,
    ryuk_image: str,
    tmp_path: Path,
) -> None:
    job, other = open_job("tc"), open_job("tcx")
    env = session_env(job.docker_host, ryuk_image, socket_override)
    raw_decoy = None
    try:
        with running_session(env, busybox_image, tmp_path / "session.log") as (report, kill):
            session = report["session"]
            assert report["page"] == "tc-ok"  # the container works, reached on its port
            # What the engine holds: both containers are the job's (Ryuk's name in its space).
            api = docker_client.api
            workload = api.inspect_container(report["container"]["id"])
            reaper = api.inspect_container(report["ryuk"]["id"])
            assert reaper["Name"] == f"/{job.name}--testcontainers-ryuk-{session}"
            assert report["ryuk"]["name"] == f"testcontainers-ryuk-{session}"
            for made in (workload, reaper):
                assert made["Config"]["Labels"]["dockmoat.tenant"] == job.name
            assert workload["Config"]["Labels"][SESSION_LABEL] == session
            # Ports on the loopback only; Ryuk unprivileged, bound to the job's socket.
            for bindings in workload["HostConfig"]["PortBindings"].values():
                assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
            assert reaper["HostConfig"]["Privileged"] is False
            (sock,) = [m for m in reaper["Mounts"] if m["Destination"] == SOCKET_IN_CONTAINER]
            # The job's socket itself (through its bind pin: the same file).
            assert os.path.samefile(sock["Source"], job.socket), (sock["Source"], job.socket)
            # The same session label on another job's container and on a raw one.
            theirs = decoy(other, session, busybox_image)
            raw_decoy = str(
                docker_client.api.create_container(
                    busybox_image, "true", labels={SESSION_LABEL: session}
                )["Id"]
            )
            kill()  # the test run dies; Ryuk reaps after its connection closes
            wait_gone(docker_client, [workload["Id"], reaper["Id"]])
        assert exists(docker_client, theirs), "Ryuk reaped another job's container"
        assert exists(docker_client, raw_decoy), "Ryuk reaped a container outside the job"
        # Ryuk did the reaping: closing the job finds no container left to remove.
        removed = job.close()
        assert removed.get("containers", []) == [], removed
    finally:
        if raw_decoy is not None:
            docker_client.api.remove_container(raw_decoy, force=True)


def test_control_ryuk_on_the_raw_socket_reaps_other_jobs_containers(
    open_job: Callable[..., Job],
    docker_host: str,
    docker_client: docker.DockerClient,
    busybox_image: str,
    ryuk_image: str,
    tmp_path: Path,
) -> None:
    """Without the scoped socket: Ryuk sees the whole engine and reaps by label alone."""
    other = open_job("tcraw")
    env = session_env(docker_host, ryuk_image, SOCKET_IN_CONTAINER)
    with running_session(env, busybox_image, tmp_path / "session.log") as (report, kill):
        assert report["page"] == "tc-ok"
        theirs = decoy(other, report["session"], busybox_image)
        kill()
        wait_gone(docker_client, [report["container"]["id"], report["ryuk"]["id"], theirs])
