"""Inside one job everything works as on the raw socket, by the names the job chose."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import docker
from tenancy_helpers import DOCKER_OLD, Job


def test_every_container_endpoint_on_own_containers(
    open_job, busybox_image: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    job: Job = open_job("own")
    job.docker("network", "create", "front")
    cid = job.docker(
        "run", "-d", "--network", "front", "--name", "db", busybox_image,
        "sh", "-c", "echo started; sleep 600",
    ).stdout.strip()  # fmt: skip
    clash = job.docker("create", "--network", "none", "--name", "db", busybox_image, check=False)
    assert 'name "/db" is already in use' in clash.stderr and job.name not in clash.stderr
    assert "started" in job.docker("logs", "db").stdout
    assert job.docker("container", "inspect", "-f", "{{.Name}}", "db").stdout.strip() == "/db"
    assert "sleep" in job.docker("top", "db").stdout
    job.docker("stats", "--no-stream", "db")
    (tmp_path / "in.txt").write_text("into the container\n")
    job.docker("cp", str(tmp_path / "in.txt"), "db:/tmp/in.txt")
    job.docker("cp", "db:/tmp/in.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_text() == "into the container\n"
    assert "/tmp/in.txt" in job.docker("diff", "db").stdout
    assert job.docker("exec", "db", "cat", "/tmp/in.txt").stdout == "into the container\n"
    piped = job.docker("exec", "-i", "db", "cat", stdin="through stdin\n")
    assert piped.stdout == "through stdin\n"
    job.docker("export", "-o", str(tmp_path / "fs.tar"), "db")
    assert (tmp_path / "fs.tar").stat().st_size > 100_000
    job.docker("update", "--memory", "64m", "--memory-swap", "128m", "db")
    assert docker_client.api.inspect_container(cid)["HostConfig"]["Memory"] == 64 * 1024 * 1024
    job.docker("pause", "db")
    assert docker_client.api.inspect_container(cid)["State"]["Paused"]
    job.docker("unpause", "db")
    job.docker("restart", "-t", "1", "db")
    job.docker("rename", "db", "db2")
    assert docker_client.api.inspect_container(cid)["Name"] == f"/{job.name}--db2"
    assert job.docker("ps", "--format", "{{.Names}}").stdout.split() == ["db2"]
    assert job.docker("ps", "-q", "-f", "name=^/db2$").stdout.split() == [cid[:12]]
    assert job.docker("ps", "-q", "-f", "name=db2", cli=DOCKER_OLD).stdout.split() == [cid[:12]]

    # Joins between the job's own containers are allowed (and resolved to full ids).
    joined = job.docker(
        "run", "--rm", "--network", "container:db2", "--pid", "container:db2",
        "--volumes-from", "db2", busybox_image, "ps",
    ).stdout  # fmt: skip
    assert "sleep 600" in joined
    job.docker("network", "create", "net")
    job.docker("network", "connect", "net", "db2")
    info = docker_client.api.inspect_container(cid)
    assert f"{job.name}--net" in info["NetworkSettings"]["Networks"]
    shown = json.loads(job.docker("container", "inspect", "db2").stdout)[0]
    assert "net" in shown["NetworkSettings"]["Networks"]
    linked = job.docker(
        "run", "--rm", "--network", "net", "--link", "db2:database", busybox_image,
        "ping", "-c1", "database",
    )  # fmt: skip
    assert "1 packets received" in linked.stdout
    job.docker("network", "disconnect", "net", "db2")
    job.docker("kill", "db2")
    assert job.docker("wait", "db2").stdout.strip() == "137"
    job.docker("start", "db2")
    job.docker("stop", "-t", "1", "db2")
    job.docker("rm", "db2")
    job.docker("network", "rm", "net", "front")
    assert job.docker("ps", "-aq").stdout.strip() == ""


def test_own_volumes_networks_images(open_job, busybox_image: str, tmp_path: Path) -> None:
    job: Job = open_job("ownv")
    job.docker("volume", "create", "data")
    job.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/d",
        busybox_image,
        "sh",
        "-c",
        "echo v > /d/f",
    )
    out = job.docker(
        "run", "--rm", "--network", "none", "--mount", "type=volume,source=data,target=/d",
        busybox_image, "cat", "/d/f",
    ).stdout  # fmt: skip
    assert out == "v\n"
    assert json.loads(job.docker("volume", "inspect", "data").stdout)[0]["Name"] == "data"
    assert job.docker("volume", "ls", "-q").stdout.split() == ["data"]
    job.docker("volume", "rm", "data")
    job.docker("network", "create", "net")
    assert json.loads(job.docker("network", "inspect", "net").stdout)[0]["Name"] == "net"
    job.docker("network", "rm", "net")

    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo built > /b\n")
    tag = f"{job.name}-app:1"
    job.docker("build", "-q", "--network", "none", "-t", tag, str(tmp_path))
    images = job.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert tag in images and busybox_image in images
    assert job.docker("run", "--rm", "--network", "none", tag, "cat", "/b").stdout == "built\n"
    job.docker("tag", tag, f"{job.name}-app:2")
    job.docker("save", "-o", str(tmp_path / "app.tar"), tag)
    job.docker("rmi", f"{job.name}-app:2")
    job.docker("rmi", tag)
    job.docker("load", "-i", str(tmp_path / "app.tar"))
    job.docker("rmi", tag)

    # A commit cannot hand its image to another owner (body labels or LABEL changes).
    job.docker("run", "-d", "--network", "none", "--name", "c", busybox_image, "sleep", "600")
    api = job.client().api
    api.commit(
        "c",
        repository=f"{job.name}-c",
        tag="1",
        conf={"Labels": {"dockmoat.tenant": "someone-else"}},
        changes="LABEL dockmoat.tenant=someone-else",
    )
    labels = api.inspect_image(f"{job.name}-c:1")["Config"]["Labels"]
    assert labels["dockmoat.tenant"] == job.name


def test_docker_cp_through_a_job_socket_never_fails(
    open_job: Callable[..., Job], busybox_image: str, tmp_path: Path
) -> None:
    """The HEAD before each `docker cp` PUT keeps the connection (test_copy_through_guard)."""
    job = open_job("cp")
    job.docker("run", "-d", "--name", "box", busybox_image, "sleep", "600")
    (tmp_path / "in.txt").write_text("payload\n")
    loop = (
        "fails=0; for i in $(seq 100); do docker cp in.txt box:/tmp/in.txt || fails=$((fails+1));"
        " docker cp box:/tmp/in.txt out.txt || fails=$((fails+1)); done; echo fails=$fails"
    )
    env = {**job.environ(), "PATH": f"/usr/bin:{os.environ['PATH']}"}
    result = subprocess.run(
        ["sh", "-c", loop], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert result.stdout.strip().endswith("fails=0"), result.stderr[-2000:]
    assert (tmp_path / "out.txt").read_text() == "payload\n"


def test_a_failed_pull_claims_nothing_and_pulled_images_are_shared(
    open_job: Callable[..., Job],
    busybox_image: str,
    docker_client: docker.DockerClient,
    unique_name: Callable[[str], str],
) -> None:
    """A job whose pull fails (no registry here) leaves no claim behind: once the image
    exists, every job may use it, and none may remove it (shared, as base images are)."""
    a, b = open_job("pulla"), open_job("pullb")
    name = f"{unique_name('base')}:1"
    failed = a.docker("pull", name, check=False)
    assert failed.returncode != 0  # nothing answers for Docker Hub on this machine
    docker_client.images.get(busybox_image).tag(name)  # the image now exists, as a pull makes it
    try:
        for job in (a, b):
            out = job.docker("run", "--rm", "--pull", "never", name, "echo", "ran").stdout
            assert out.strip() == "ran"
        refused = b.docker("rmi", name, check=False)
        assert refused.returncode != 0
        assert docker_client.images.get(name)
    finally:
        docker_client.images.remove(name)
