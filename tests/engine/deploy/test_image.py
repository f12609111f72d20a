"""The dockmoat image, built from the repository's Dockerfile with the real engine, run.

Checks what an operator relies on: the OCI labels, the health check on /_ping, no
compiler in it, serve running unprivileged (uid 10001, no capabilities) in the Docker
socket's group, the policy applied to a real client through the shared socket volume,
and `--version` naming the build.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest
from deploysupport import Images

pytestmark = pytest.mark.engine

DOCKER = "docker"


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _inspect(image: str) -> dict[str, object]:
    done = _docker("image", "inspect", image)
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)[0]
    return found


def test_image_has_oci_labels_a_health_check_and_no_compiler(deploy_images: Images) -> None:
    config = _inspect(deploy_images.guard)["Config"]
    assert isinstance(config, dict)
    labels = config["Labels"]
    for key in ("title", "version", "revision", "created", "source", "licenses", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.base.name"].startswith("debian:")
    assert config["Healthcheck"]["Test"][-1] == "dockmoat.deploy.health"
    probe = _docker(
        "run", "--rm", "--entrypoint", "sh", deploy_images.guard, "-c",
        "for c in gcc cc c++ g++ clang make ld; do command -v $c; done; "
        "test ! -e /opt/dockmoat/bin/pip && echo no-pip",
    )  # fmt: skip
    assert probe.stdout.strip() == "no-pip", probe.stdout + probe.stderr
    size = int(_inspect(deploy_images.guard)["Size"])  # type: ignore[call-overload]
    assert size < 350 * 1024 * 1024


def test_version_names_the_build(deploy_images: Images) -> None:
    done = _docker("run", "--rm", deploy_images.guard, "--version")
    assert done.returncode == 0, done.stderr
    revision = _inspect(deploy_images.guard)["Config"]["Labels"][  # type: ignore[index]
        "org.opencontainers.image.revision"
    ]
    assert done.stdout.startswith("dockmoat, version 0.1.0 (commit ")
    assert f"commit {revision}," in done.stdout
    assert "image built" in done.stdout


@pytest.fixture
def guard(deploy_images: Images) -> Iterator[tuple[str, str]]:
    suffix = secrets.token_hex(4)
    name, volume = f"dmdeploy-guard-{suffix}", f"dmdeploy-sock-{suffix}"
    done = _docker(
        "run", "-d", "--name", name,
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{volume}:/run/dockmoat/guarded",
        "--security-opt", "no-new-privileges",
        deploy_images.guard,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        yield name, volume
    finally:
        _docker("rm", "-f", "-v", name)
        _docker("volume", "rm", "-f", volume)


def _health(name: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = _docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
        if status in ("healthy", "unhealthy"):
            return status
        time.sleep(0.5)
    return status


def test_guard_runs_unprivileged_healthy_and_enforces_the_policy(
    guard: tuple[str, str], deploy_images: Images
) -> None:
    name, volume = guard
    assert _health(name) == "healthy", _docker("logs", name).stderr[-3000:]
    status = _docker("exec", name, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[:2] == ["10001", "10001"]
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["CapBnd"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    client = [
        "run", "--rm", "-v", f"{volume}:/run/dockmoat/guarded",
        "-e", "DOCKER_HOST=unix:///run/dockmoat/guarded/docker.sock", deploy_images.cli,
    ]  # fmt: skip
    version = _docker(*client, "docker", "version", "--format", "{{.Server.Version}}")
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
    denied = _docker(
        *client, "docker", "run", "--rm", "--privileged", "dockmoat-test/busybox:latest", "true"
    )
    assert denied.returncode != 0
    assert "containers.privileged" in denied.stderr
    ran = _docker(*client, "docker", "run", "--rm", "dockmoat-test/busybox:latest", "echo", "hi")
    assert ran.returncode == 0 and ran.stdout.strip() == "hi", ran.stderr


def test_health_check_fails_when_the_daemon_is_unreachable(deploy_images: Images) -> None:
    name = f"dmdeploy-nosock-{secrets.token_hex(4)}"
    done = _docker(
        "run", "-d", "--name", name, "-e", "DOCKER_HOST=unix:///nowhere/docker.sock",
        "--health-interval", "1s", "--health-retries", "2", deploy_images.guard,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        assert _health(name) == "unhealthy"
        check = _docker("exec", name, "python3", "-m", "dockmoat.deploy.health")
        assert check.returncode == 1 and "answered 502" in check.stdout, check.stdout
    finally:
        _docker("rm", "-f", "-v", name)


def test_dind_image_is_ready_on_ping_over_mutual_tls(deploy_images: Images) -> None:
    """The readiness probe `generate arc` writes, run in the dind image as Kubernetes would."""
    name = f"dmdeploy-dind-{secrets.token_hex(4)}"
    done = _docker(
        "run", "-d", "--privileged", "--name", name,
        "-e", "DOCKMOAT_CLIENT_KEY_OWNER=1001:1001", "-e", "DOCKER_TLS_SAN=DNS:docker IP:127.0.0.1",
        deploy_images.dind,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    probe = ["exec", name, "python3", "-m", "dockmoat.deploy.health", "tcp://127.0.0.1:2376"]
    try:
        deadline = time.monotonic() + 60
        while True:
            ready = _docker(*probe, "--tls-dir", "/certs/client")
            if ready.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert ready.returncode == 0, ready.stdout + ready.stderr + _docker("logs", name).stderr
        # Without the client certificate the daemon does not answer: TLS is on.
        assert _docker(*probe).returncode == 1
        owners = _docker("exec", name, "stat", "-c", "%u:%g %a %n", "/certs/client/key.pem")
        assert owners.stdout.startswith("1001:1001 600 "), owners.stdout
    finally:
        _docker("rm", "-f", "-v", name)
