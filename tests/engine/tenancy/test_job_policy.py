"""A job's policy: the server's, with the job's workspace as its only bind folder; and
listeners that are tenants of their own (`serve --tenant NAME`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from tenancy_helpers import Job, Serve, assert_nothing_left

from dockmoat.policy.hostpaths import missing_mount_flags


@pytest.mark.host_namespaces  # binds a host folder: the host's mount namespace
def test_workspace_is_the_only_bind_folder(
    open_job, serve: Serve, busybox_image: str, tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "hello.txt").write_text("from the workspace\n")
    job: Job = open_job("ws", "--workspace", str(workspace))
    # A workspace on a filesystem without nosuid/nodev is warned about, as --allow-bind is.
    warned = f"workspace {workspace} is on a filesystem without" in serve.log.read_text()
    assert warned == bool(missing_mount_flags(workspace))
    out = job.docker(
        "run", "--rm", "--network", "none", "-v", f"{workspace}:/workspace", busybox_image,
        "cat", "/workspace/hello.txt",
    ).stdout  # fmt: skip
    assert out == "from the workspace\n"
    for source in ("/", "/etc", str(tmp_path)):
        refused = job.docker(
            "run", "--rm", "--network", "none", "-v", f"{source}:/host", busybox_image, "true",
            check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "dockmoat: " in refused.stderr, refused.stderr
    assert (
        docker_client.api.containers(all=True, filters={"label": f"dockmoat.tenant={job.name}"})
        == []
    )


@pytest.fixture
def tenant_serve(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Serve]:
    root = Path(tmp_path_factory.mktemp("static"))
    server = Serve(
        root=root,
        upstream=docker_host,
        extra=("--tenant", "dmtest-static"),
    )
    server.start()
    yield server
    server.stop()


def test_a_tenant_listener_is_isolated_like_a_job(
    tenant_serve: Serve, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    env = {"DOCKER_HOST": f"unix://{tenant_serve.root / 'main.sock'}", "PATH": "/usr/bin:/bin"}
    other = docker_client.containers.run(
        busybox_image, ["sleep", "600"], detach=True, network_mode="none",
        name="dmtest-host-owned", labels={"dmtest": "1"},
    )  # fmt: skip
    try:
        run = subprocess.run(
            ["docker", "run", "-d", "--network", "none", "--name", "db", busybox_image,
             "sleep", "600"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        ps = subprocess.run(
            ["docker", "ps", "-a", "--format", "{{.Names}}"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ps.stdout.split() == ["db"]
        stop = subprocess.run(
            ["docker", "stop", "dmtest-host-owned"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "No such container: dmtest-host-owned" in stop.stderr
        other.reload()
        assert other.status == "running"
        owned = docker_client.api.containers(
            all=True, filters={"label": "dockmoat.tenant=dmtest-static"}
        )
        assert [c["Names"][0] for c in owned] == ["/dmtest-static--db"]
    finally:
        other.remove(force=True)
        for c in docker_client.api.containers(
            all=True, filters={"label": "dockmoat.tenant=dmtest-static"}
        ):
            docker_client.api.remove_container(c["Id"], force=True)
    assert_nothing_left(docker_client, "dmtest-static")
