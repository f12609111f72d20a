"""The restricted profile and the Tecnativa-style switches through a real `dockmoat serve`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from policygw import Gateway, start_gateway, stop

DOCKER = "/usr/local/bin/docker" if Path("/usr/local/bin/docker").exists() else "docker"


def cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, *args], env=gateway.env(), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def label(unique_name: Callable[[str], str], docker_client: docker.DockerClient) -> Iterator[str]:
    value = unique_name("prof")
    yield value
    for container in docker_client.containers.list(all=True, filters={"label": f"dmtest={value}"}):
        container.remove(force=True)


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Gateway]:
    gateway, process = start_gateway(
        tmp_path_factory.mktemp("restricted"), docker_host, "--profile", "restricted"
    )
    yield gateway
    stop(process)


@pytest.fixture(scope="module")
def switched(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Gateway]:
    """The seed's socket-proxy environment, unchanged (plus POST=0 for read-only)."""
    env = {"CONTAINERS": "1", "IMAGES": "1", "NETWORKS": "1", "VOLUMES": "1", "POST": "0"}
    gateway, process = start_gateway(tmp_path_factory.mktemp("switched"), docker_host, env=env)
    yield gateway
    stop(process)


def test_restricted_allows_only_hardened_containers(
    restricted: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    hardened = [
        "--user", "65534:65534", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
    ]  # fmt: skip
    result = cli(
        restricted,
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        f"dmtest={label}",
        *hardened,
        busybox_image,
        "id",
        "-u",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "65534"
    for flags, rule in (
        ([], "containers.non-root-user"),
        (["--user", "0"], "containers.non-root-user"),
        (["--user", "1000", "--security-opt", "no-new-privileges"], "containers.drop-all-caps"),
        (["--user", "1000", "--cap-drop", "ALL"], "containers.no-new-privileges"),
        ([*hardened, "-v", f"{restricted.workspace}:/w"], "containers.no-binds"),
    ):
        result = cli(restricted, "create", "--label", f"dmtest={label}", *flags, busybox_image)
        assert f"dockmoat: {rule}: " in result.stderr, (flags, result.stderr)
    made = docker_client.containers.list(all=True, filters={"label": f"dmtest={label}"})
    assert made == []


def test_switches_make_the_api_read_only(
    switched: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    assert cli(switched, "ps", "-a").returncode == 0
    assert cli(switched, "images").returncode == 0
    result = cli(switched, "info")
    assert "dockmoat: endpoints.switches: " in result.stderr  # INFO defaults to 0
    result = cli(switched, "create", "--label", f"dmtest={label}", busybox_image)
    assert "dockmoat: endpoints.switches: " in result.stderr
    assert "read-only" in result.stderr
    assert docker_client.containers.list(all=True, filters={"label": f"dmtest={label}"}) == []


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("limited")
    policy = directory / "policy.yaml"
    policy.write_text(
        "limits:\n  memory: {default: 96m, max: 256m}\n  cpus: {default: 0.5, max: 1}\n"
        "  pids: {default: 300, max: 1000}\n"
    )
    gateway, process = start_gateway(directory / "gw", docker_host, "--policy", str(policy))
    yield gateway
    stop(process)


def test_limits_are_injected_and_enforced(
    limited: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    result = cli(limited, "create", "--label", f"dmtest={label}", busybox_image)
    assert result.returncode == 0, result.stderr
    host = docker_client.api.inspect_container(result.stdout.strip())["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (96 * 1024**2, 500_000_000, 300)
    for flags, rule in (
        (["--memory", "1g"], "containers.memory-limit"),
        (["--cpus", "2"], "containers.cpu-limit"),
        (["--pids-limit", "5000"], "containers.pids-limit"),
    ):
        result = cli(limited, "create", "--label", f"dmtest={label}", *flags, busybox_image)
        assert f"dockmoat: {rule}: " in result.stderr, (flags, result.stderr)
    assert len(docker_client.containers.list(all=True, filters={"label": f"dmtest={label}"})) == 1


def test_restricted_exec_as_root_is_refused(
    restricted: Gateway, busybox_image: str, label: str
) -> None:
    hardened = ["--user", "65534", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    result = cli(
        restricted,
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        f"dmtest={label}",
        *hardened,
        busybox_image,
        "sleep",
        "60",
    )
    assert result.returncode == 0, result.stderr
    ident = result.stdout.strip()
    result = cli(restricted, "exec", "-u", "root", ident, "id")
    assert "dockmoat: exec.non-root-user: " in result.stderr
    result = cli(restricted, "exec", ident, "id", "-u")
    assert result.stdout.strip() == "65534", result.stderr
