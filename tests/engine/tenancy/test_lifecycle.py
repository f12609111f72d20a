"""Jobs end without a trace: `job close`, TTL expiry, and a SIGKILLed gateway restarted mid-job."""

from __future__ import annotations

import json
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import docker
import pytest
from tenancy_helpers import (
    DOCKER_NEW,
    DOCKER_OLD,
    Job,
    Serve,
    assert_footprint_gone,
    assert_nothing_left,
    footprint,
    job_name,
    snapshot,
)

COMPOSE = """\
version: "2.4"
services:
  web:
    image: {image}
    command: sh -c "echo hello from web; sleep 600"
    volumes:
      - data:/data
  worker:
    image: {image}
    command: sh -c "ping -c1 web && echo worker-ok && sleep 600"
    depends_on: [web]
volumes:
  data:
"""


def _busy_job(job: Job, busybox_image: str, workdir: Path) -> None:
    """A CI day in miniature."""
    job.docker("run", "-d", "--network", "none", "--name", "db", busybox_image, "sleep", "600")
    job.docker("run", "--network", "none", "-v", "cache:/c", "-v", "/anon", busybox_image, "true")
    job.docker("volume", "create", "data")
    job.docker("network", "create", "net")
    job.docker("exec", "db", "sh", "-c", "echo hi > /tmp/x")
    # (The SDK: the newer CLI's commit currently trips a policy body check.)
    job.client().api.commit("db", repository=f"{job.name}-committed", tag="1", conf={})
    (workdir / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo built > /b\n")
    job.docker("build", "-q", "--network", "none", "-t", f"{job.name}-app:1", str(workdir))
    job.docker("tag", busybox_image, f"{job.name}-mybox:1")
    tar = workdir / "busybox.tar"
    job.docker("save", "-o", str(tar), busybox_image)
    job.docker("load", "-i", str(tar))  # tags that exist already: never the job's
    project = workdir / "proj"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE.format(image=busybox_image))
    job.compose(project, "-p", "app", "up", "-d")


def _tags(job: Job) -> frozenset[str]:
    return frozenset(f"{job.name}-{suffix}:1" for suffix in ("committed", "app", "mybox"))


def test_close_leaves_the_engine_as_before(
    serve: Serve, busybox_image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    before = snapshot(docker_client)
    job = serve.open_job(job_name("close"), "--workspace", str(tmp_path))
    _busy_job(job, busybox_image, tmp_path)
    listed = json.loads(serve.job("ls", "--format", "json").stdout)
    mine = next(j for j in listed if j["job"] == job.name)
    assert mine["owned"]["container"] == 4 and mine["owned"]["image"] == 3
    assert mine["owned"]["volume"] >= 3 and mine["owned"]["network"] == 2
    made = footprint(docker_client, job.name, before, _tags(job))
    assert len(made["containers"]) == 4 and len(made["images"]) >= 3

    removed = job.close()

    assert {"db", "app-web-1", "app-worker-1"} <= set(removed["containers"])  # compose v2 names
    assert {"cache", "data", "app_data"} <= set(removed["volumes"])
    assert {"net", "app_default"} <= set(removed["networks"])
    assert busybox_image not in removed["images"]
    assert_nothing_left(docker_client, job.name, _tags(job))
    assert_footprint_gone(docker_client, made)
    after = snapshot(docker_client)
    # What existed before is still there: the shared image keeps its id and tags, and
    # the daemon's networks are untouched.
    shared = {i for i in before.images if busybox_image in i[1]}
    assert shared and shared <= after.images
    predefined = {n for n in before.networks if n[1] in ("bridge", "host", "none")}
    assert predefined <= after.networks
    assert not Path(job.socket).exists()


def test_ttl_expiry_closes_the_job(
    serve: Serve, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    before = snapshot(docker_client)
    job = serve.open_job(job_name("ttl"), "--ttl", "10s")
    job.docker(
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "db",
        "-v",
        "/anon",
        busybox_image,
        "sleep",
        "600",
    )
    job.docker("volume", "create", "data")
    job.docker("network", "create", "net")
    made = footprint(docker_client, job.name, before)
    assert len(made["containers"]) == 1 and len(made["volumes"]) == 2
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = [j["job"] for j in json.loads(serve.job("ls", "--format", "json").stdout)]
        if job.name not in names:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the job outlived its TTL")
    job.closed = True
    assert_nothing_left(docker_client, job.name)
    assert_footprint_gone(docker_client, made)
    assert not Path(job.socket).exists()


def test_sigkill_then_restart_keeps_the_job_and_close_still_finds_everything(
    serve: Serve, busybox_image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    before = snapshot(docker_client)
    job = serve.open_job(job_name("kill"))
    job.docker("run", "-d", "--network", "none", "--name", "db", busybox_image, "sleep", "600")
    job.docker("volume", "create", "data")
    job.docker("tag", busybox_image, f"{job.name}-mybox:1")
    # A client in the middle of a request (attached to a running container) when
    # the gateway dies: what it created is found anyway.
    attached = subprocess.Popen(
        [
            DOCKER_NEW,
            "run",
            "--network",
            "none",
            "--name",
            "inflight",
            busybox_image,
            "sleep",
            "60",
        ],
        env=job.environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not docker_client.api.containers(filters={"name": f"{job.name}--inflight"}):
        assert time.monotonic() < deadline, "the attached container never started"
        time.sleep(0.2)
    serve.kill()
    attached.wait(timeout=30)
    serve.start()
    # The job's socket is back and the job sees its own things by their own names.
    assert sorted(job.docker("ps", "--format", "{{.Names}}").stdout.split()) == ["db", "inflight"]
    job.docker("network", "create", "net")
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo built > /b\n")
    job.docker("build", "-q", "--network", "none", "-t", f"{job.name}-app:1", str(tmp_path))
    tags = frozenset({f"{job.name}-mybox:1", f"{job.name}-app:1"})
    made = footprint(docker_client, job.name, before, tags)
    removed = job.close()
    assert {"db", "inflight"} <= set(removed["containers"]) and "data" in removed["volumes"]
    assert_nothing_left(docker_client, job.name, tags)
    assert_footprint_gone(docker_client, made)
    assert docker_client.api.images(name=busybox_image)


@pytest.mark.host_namespaces  # binds the workspace, talks to a port on the host's loopback
@pytest.mark.parametrize("compose", ["v1", "v2"])
def test_compose_and_testcontainers_workloads_run_unchanged(
    compose: str,
    open_job,
    busybox_image: str,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    a: Job = open_job("ca")
    b: Job = open_job("cb")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE.format(image=busybox_image))
    for job in (a, b):  # the same project name in two jobs at once
        job.compose(project, "-p", "app", "up", "-d", version=compose)
    for job in (a, b):
        ps = job.compose(project, "-p", "app", "ps", version=compose).stdout
        sep = "_" if compose == "v1" else "-"  # v1 names app_web_1, v2 app-web-1
        assert f"app{sep}web{sep}1" in ps and f"app{sep}worker{sep}1" in ps
        assert job.name not in ps
        assert (
            "hello from web"
            in job.compose(project, "-p", "app", "logs", "web", version=compose).stdout
        )
        out = job.compose(
            project, "-p", "app", "exec", "-T", "web", "cat", "/etc/hostname", version=compose
        )
        assert out.stdout.strip()
    deadline = time.monotonic() + 30
    while (
        "worker-ok" not in a.compose(project, "-p", "app", "logs", "worker", version=compose).stdout
    ):
        assert time.monotonic() < deadline, "the worker could not reach web by name"
        time.sleep(0.5)
    a.compose(project, "-p", "app", "down", "-v", version=compose)
    assert b.compose(
        project, "-p", "app", "ps", "-q", version=compose
    ).stdout.split()  # b's project untouched
    assert_nothing_left(docker_client, a.name)

    # testcontainers-style: labelled container, port published on loopback, talk, remove.
    client = b.client()
    container = client.containers.run(
        busybox_image,
        ["sh", "-c", "mkdir /www && echo tc-ok > /www/index.html && httpd -f -p 80 -h /www"],
        labels={"org.testcontainers": "true", "org.testcontainers.sessionId": "s1"},
        ports={"80/tcp": ("127.0.0.1", None)},
        detach=True,
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    assert answer.read().strip() == b"tc-ok"
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        listed = client.containers.list(filters={"label": "org.testcontainers.sessionId=s1"})
        assert [c.id for c in listed] == [container.id]
    finally:
        container.remove(force=True)
    client.close()


def test_quotas_are_refused_by_name(
    open_job, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    job: Job = open_job("quota", "--max-containers", "1", "--max-volumes", "1")
    job.docker("run", "-d", "--network", "none", busybox_image, "sleep", "600")
    second = job.docker(
        "run", "-d", "--network", "none", busybox_image, "sleep", "600", check=False
    )
    assert second.returncode != 0 and "tenancy.quota.running-containers" in second.stderr
    running = docker_client.api.containers(filters={"label": f"dockmoat.tenant={job.name}"})
    assert len(running) == 1
    job.docker("volume", "create", "v1")
    refused = job.docker("volume", "create", "v2", check=False)
    assert refused.returncode != 0 and "tenancy.quota.volumes" in refused.stderr
    assert not docker_client.api.volumes(filters={"name": f"{job.name}--v2"})["Volumes"]


def test_job_cli_and_control_socket(serve: Serve, busybox_image: str) -> None:
    name = job_name("cli")
    opened = serve.job("open", name, "--ttl", "1h").stdout
    host = f"unix://{serve.root / 'jobs' / name}.sock"
    assert opened == f"DOCKER_HOST={host}; export DOCKER_HOST\n"
    assert stat.S_IMODE(serve.control.stat().st_mode) == 0o600
    again = serve.job("open", name, check=False)
    assert again.returncode != 0 and "open already" in again.stderr
    job = Job(name, host, serve)
    job.docker(
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "db",
        busybox_image,
        "sleep",
        "600",
        cli=DOCKER_OLD,
    )
    table = serve.job("ls").stdout
    assert name in table and "1h00m" in table
    closed = serve.job("close", name).stdout
    assert "removed container db" in closed
    missing = serve.job("close", name, check=False)
    assert missing.returncode != 0 and f"no open job {name}" in missing.stderr
    bad = serve.job("open", "Bad--Name", check=False)
    assert bad.returncode != 0 and "invalid job name" in bad.stderr


def test_control_socket_refuses_garbage(serve: Serve) -> None:
    out = subprocess.run(
        [
            "python3",
            "-c",
            f"""
import socket
s = socket.socket(socket.AF_UNIX); s.connect({str(serve.control)!r})
s.sendall(b'{{"op": "rm", "job": "x"}}\\n'); print(s.recv(4096).decode())
""",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    answer = json.loads(out.stdout)
    assert answer["ok"] is False and "bad control request" in answer["error"]


def test_memory_quota(open_job, busybox_image: str, docker_client: docker.DockerClient) -> None:
    job: Job = open_job("mem", "--max-memory", "100m")
    job.docker("run", "-d", "--network", "none", "-m", "64m", busybox_image, "sleep", "600")
    over = job.docker(
        "run", "-d", "--network", "none", "-m", "64m", busybox_image, "sleep", "600", check=False
    )
    assert over.returncode != 0 and "tenancy.quota.memory" in over.stderr
    unlimited = job.docker(
        "run", "-d", "--network", "none", busybox_image, "sleep", "600", check=False
    )
    assert unlimited.returncode != 0 and "needs a memory limit" in unlimited.stderr
    owned = docker_client.api.containers(all=True, filters={"label": f"dockmoat.tenant={job.name}"})
    assert len(owned) == 1
