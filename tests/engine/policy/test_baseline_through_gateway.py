"""Each baseline rule through `dockmoat serve` with the real docker CLI.

The dangerous request must be refused with the rule's message AND nothing of it
may exist on the engine afterwards (containers are looked up by a label unique to
the test); the legitimate form must work and be visible on the engine.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from policygw import Gateway
from rawdocker import call

from harness.clients import client
from support.audit_file import settled_entries

PIDS_MAX = "/sys/fs/cgroup/pids.max"
PIDS_MAX_V1 = "/sys/fs/cgroup/pids/pids.max"
DOCKER = client("docker") or "docker"


@pytest.fixture
def label(unique_name: Callable[[str], str], docker_client: docker.DockerClient) -> Iterator[str]:
    """A label value unique to the test; everything carrying it is removed afterwards."""
    value = unique_name("policy")
    yield value
    for container in docker_client.containers.list(all=True, filters={"label": f"dmtest={value}"}):
        container.remove(force=True, v=True)
    for volume in docker_client.volumes.list(filters={"label": f"dmtest={value}"}):
        volume.remove(force=True)
    for network in docker_client.networks.list(filters={"label": f"dmtest={value}"}):
        network.remove()


def cli(
    gateway: Gateway, *args: str, client: str = DOCKER, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [client, *args], env={**gateway.env(), **(env or {})}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


#: The classic builder (`/build` read as an HTTP request); BuildKit has its own tests.
CLASSIC = {"DOCKER_BUILDKIT": "0"}


def made(docker_client: docker.DockerClient, label: str) -> list[dict[str, object]]:
    containers = docker_client.containers.list(all=True, filters={"label": f"dmtest={label}"})
    return [c.attrs for c in containers]


DANGEROUS = [
    ("containers.privileged", ["--privileged"]),
    ("containers.bind-mounts", ["-v", "/:/host"]),
    ("containers.bind-mounts", ["-v", "/var/run/docker.sock:/var/run/docker.sock"]),
    ("containers.bind-mounts", ["-v", "/var/run:/x"]),
    ("containers.bind-mounts", ["--mount", "type=bind,source=/etc,target=/e"]),
    ("containers.host-namespaces", ["--pid", "host"]),
    ("containers.host-namespaces", ["--network", "host"]),
    ("containers.host-namespaces", ["--ipc", "host"]),
    ("containers.host-namespaces", ["--uts", "host"]),
    ("containers.host-namespaces", ["--userns", "host"]),
    ("containers.capabilities", ["--cap-add", "SYS_ADMIN"]),
    ("containers.capabilities", ["--cap-add", "ALL"]),
    ("containers.capabilities", ["--cap-add", "cap_net_admin"]),
    ("containers.devices", ["--device", "/dev/null:/dev/x"]),
    ("containers.devices", ["--device-cgroup-rule", "c 1:3 rwm"]),
    ("containers.confinement", ["--security-opt", "seccomp=unconfined"]),
    ("containers.confinement", ["--security-opt", "apparmor=unconfined"]),
    ("containers.confinement", ["--security-opt", "label=disable"]),
    ("containers.confinement", ["--security-opt", "systempaths=unconfined"]),
    ("containers.sysctls", ["--sysctl", "net.ipv4.ip_forward=1"]),
    ("containers.cgroup-parent", ["--cgroup-parent", "/"]),
    ("containers.runtime", ["--runtime", "io.containerd.runtime.v1.linux"]),
    ("containers.log-driver", ["--log-driver", "syslog"]),
    ("containers.proc-workdir", ["--workdir", "/proc/self/fd/8"]),
    ("containers.pids-limit", ["--pids-limit", "-1"]),
    ("containers.published-ports", ["-P"]),
]


@pytest.mark.parametrize(("rule", "flags"), DANGEROUS, ids=[" ".join(f) for _, f in DANGEROUS])
def test_dangerous_create_is_refused_and_nothing_exists(
    gateway: Gateway,
    busybox_image: str,
    docker_client: docker.DockerClient,
    label: str,
    rule: str,
    flags: list[str],
) -> None:
    result = cli(
        gateway,
        "create",
        "--pull",
        "never",
        "--label",
        f"dmtest={label}",
        *flags,
        busybox_image,
        "true",
    )
    assert result.returncode != 0, result.stdout
    assert f"dockmoat: {rule}: " in result.stderr, result.stderr
    assert made(docker_client, label) == []


def test_seed_example_privileged_run_is_refused(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    result = cli(
        gateway,
        "run",
        "--rm",
        "--pull",
        "never",
        "--label",
        f"dmtest={label}",
        "--privileged",
        busybox_image,
        "true",
    )
    assert result.returncode == 125
    assert "dockmoat: containers.privileged: " in result.stderr
    assert made(docker_client, label) == []


def test_seed_example_host_root_is_refused_with_both_clients(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    for cli_path in (DOCKER, client("docker-20.10") or "docker-20.10"):
        result = cli(
            gateway,
            "run",
            "--rm",
            "--label",
            f"dmtest={label}",
            "-v",
            "/:/host",
            busybox_image,
            "cat",
            "/host/etc/shadow",
            client=cli_path,
        )
        assert result.returncode == 125, (client, result.stdout)
        assert "dockmoat: containers.bind-mounts: " in result.stderr
    assert made(docker_client, label) == []


def test_symlink_planted_in_the_workspace_is_refused(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    link = gateway.workspace / f"escape-{label}"
    link.symlink_to("/")
    try:
        result = cli(
            gateway, "create", "--label", f"dmtest={label}", "-v", f"{link}:/host", busybox_image
        )
        assert "dockmoat: containers.bind-mounts: " in result.stderr
        assert made(docker_client, label) == []
    finally:
        link.unlink()


@pytest.mark.host_namespaces  # binds a host folder: the host's mount namespace
def test_workspace_bind_ports_and_pids_limit_work(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    (gateway.workspace / "hello.txt").write_text("hello\n")
    result = cli(
        gateway, "run", "--rm", "--pull", "never", "--network", "none",
        "--label", f"dmtest={label}",
        "-v", f"{gateway.workspace}:/workspace:ro", "-w", "/workspace", busybox_image,
        "sh", "-c", f"cat hello.txt; cat {PIDS_MAX} 2>/dev/null || cat {PIDS_MAX_V1}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", "4096"]

    result = cli(
        gateway,
        "create",
        "--label",
        f"dmtest={label}",
        "-p",
        "18081:80",
        "-p",
        "0.0.0.0:18082:81",
        busybox_image,
    )
    assert result.returncode == 0, result.stderr
    info = docker_client.api.inspect_container(result.stdout.strip())
    bindings = info["HostConfig"]["PortBindings"]
    assert bindings["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "18081"}]
    assert bindings["81/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "18082"}]
    assert info["HostConfig"]["PidsLimit"] == 4096
    audit = settled_entries(gateway.audit)
    assert any("containers.published-ports" in str(entry.get("rule")) for entry in audit)

    result = cli(
        gateway,
        "create",
        "--label",
        f"dmtest={label}",
        "--pids-limit",
        "100",
        "--cap-add",
        "NET_RAW",
        "--security-opt",
        "no-new-privileges",
        busybox_image,
    )
    assert result.returncode == 0, result.stderr
    info = docker_client.api.inspect_container(result.stdout.strip())
    assert info["HostConfig"]["PidsLimit"] == 100


def test_raw_bypass_forms_are_refused(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    """Forms the docker CLI never sends but dockerd accepts: top-level, folded, merged."""
    labels = json.dumps({"dmtest": label})
    head = f'"Image": "{busybox_image}", "Labels": {labels}'
    bodies = [
        "{" + head + ', "Privileged": true}',
        "{" + head + ', "HostConfig": {"Bind\u017f": ["/:/host"]}}',
        "{" + head + ', "HostConfig": {"Privileged": true}, "HostConfig": {"Memory": 67108864}}',
        "{" + head + ', "hostconfig": {"binds": ["/:/host"]}}',
        "{" + head + '} {"HostConfig": {"Privileged": true}}',
        "{" + head + ', "HostConfig": {"CapAdd": ["\u017fys_admin"]}}',
    ]
    for body in bodies:
        status, answer = call(
            str(gateway.socket), "POST", "/v1.41/containers/create", body.encode()
        )
        assert status in (400, 403), (body, status, answer)
        assert "dockmoat" in json.dumps(answer) or status == 400
    assert made(docker_client, label) == []


def test_volume_and_exec_rules(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    name = f"{label}-vol"
    result = cli(
        gateway,
        "volume",
        "create",
        "--label",
        f"dmtest={label}",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        "device=/",
        name,
    )
    assert "dockmoat: volumes.host-path: " in result.stderr
    assert docker_client.volumes.list(filters={"name": name}) == []
    result = cli(gateway, "volume", "create", "--label", f"dmtest={label}", name)
    assert result.returncode == 0, result.stderr

    result = cli(
        gateway,
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        f"dmtest={label}",
        "-v",
        f"{name}:/data",
        busybox_image,
        "sleep",
        "60",
    )
    assert result.returncode == 0, result.stderr
    ident = result.stdout.strip()
    result = cli(gateway, "exec", "--privileged", ident, "true")
    assert "dockmoat: exec.privileged: " in result.stderr
    result = cli(gateway, "exec", "-w", "/proc/self/fd/3", ident, "true")
    assert "dockmoat: exec.proc-workdir: " in result.stderr
    result = cli(gateway, "exec", ident, "sh", "-c", "echo ok > /data/f; cat /data/f")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    result = cli(gateway, "update", "--pids-limit", "-1", ident)
    assert "dockmoat: containers.pids-limit: " in result.stderr
    assert docker_client.api.inspect_container(ident)["HostConfig"]["PidsLimit"] == 4096


def test_endpoint_rules(gateway: Gateway, docker_client: docker.DockerClient) -> None:
    result = cli(gateway, "plugin", "install", "--grant-all-permissions", "vieux/sshfs")
    assert "dockmoat: system.plugins: " in result.stderr
    result = cli(gateway, "swarm", "init")
    assert "dockmoat: system.swarm: " in result.stderr
    assert docker_client.info()["Swarm"]["LocalNodeState"] == "inactive"


def test_builds(
    gateway: Gateway,
    busybox_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    label: str,
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nLABEL dmtest={label}\nRUN true\n")
    tag = f"{label}:built"
    result = cli(gateway, "build", "--network", "host", "-t", tag, str(tmp_path), env=CLASSIC)
    assert "dockmoat: build.network-host: " in result.stderr, result.stderr
    assert docker_client.images.list(name=tag) == []
    result = cli(gateway, "build", "-t", tag, str(tmp_path), env=CLASSIC)
    try:
        assert result.returncode == 0, result.stderr
        assert len(docker_client.images.list(name=tag)) == 1
    finally:
        for image in docker_client.images.list(name=tag):
            docker_client.images.remove(image.id, force=True)


def test_private_registry_pull_is_refused(gateway: Gateway) -> None:
    result = cli(gateway, "pull", "169.254.169.254/meta:latest")
    assert "dockmoat: images.registry-address: " in result.stderr
    result = cli(gateway, "import", "http://127.0.0.1:9/x.tar")
    assert "dockmoat: images.remote-fetch: " in result.stderr
    _ = os  # keep the import for readers running single tests with -k


@pytest.fixture
def target(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> Iterator[str]:
    """A created (not started) container of this test, to try joins against."""
    result = cli(
        gateway, "create", "--network", "none", "--label", f"dmtest={label}", busybox_image
    )
    assert result.returncode == 0, result.stderr
    yield result.stdout.strip()


def test_joins_are_refused(
    gateway: Gateway,
    busybox_image: str,
    docker_client: docker.DockerClient,
    label: str,
    target: str,
) -> None:
    other = f"{label}-other"
    for flags, rule in (
        (["--network", f"container:{target}"], "containers.namespace-joins"),
        (["--pid", f"container:{target}"], "containers.namespace-joins"),
        (["--ipc", f"container:{target}"], "containers.namespace-joins"),
        (["--volumes-from", target], "containers.volumes-from"),
        (["--link", f"{target}:t"], "containers.links"),
    ):
        result = cli(
            gateway, "create", "--name", other, "--label", f"dmtest={label}", *flags, busybox_image
        )
        assert f"dockmoat: {rule}: " in result.stderr, (flags, result.stderr)
    assert [c["Id"] for c in made(docker_client, label)] == [target]


def test_other_refusals_leave_nothing_behind(
    gateway: Gateway, docker_client: docker.DockerClient, label: str, tmp_path: Path
) -> None:
    result = cli(
        gateway, "volume", "create", "-d", "vieux/sshfs", "--label", f"dmtest={label}", f"{label}-v"
    )
    assert "dockmoat: volumes.driver: " in result.stderr
    result = cli(
        gateway, "network", "create", "-d", "macvlan", "--label", f"dmtest={label}", f"{label}-n"
    )
    assert "dockmoat: networks.driver: " in result.stderr
    assert docker_client.networks.list(names=[f"{label}-n"]) == []
    # The docker CLI downloads URL contexts itself; other clients make the daemon fetch.
    remote = "/v1.41/build?remote=http://127.0.0.1:9/context.tar"
    status, answer = call(str(gateway.socket), "POST", remote, b"")
    assert status == 403 and answer["message"].startswith("dockmoat: build.remote-context: ")
    env = {**gateway.env(), "DOCKER_CONFIG": str(tmp_path)}
    login = subprocess.run(
        [DOCKER, "login", "-u", "u", "--password-stdin", "127.0.0.1:9"],
        input="p", env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "dockmoat: system.auth-address: " in login.stderr
    for raw_target, rule in (
        ("/session", "tenancy.build-session"),  # BuildKit is read now; a session needs its id
        ("/v1.41/nope", "system.unknown-endpoint"),
    ):
        status, answer = call(str(gateway.socket), "POST", raw_target, b"")
        assert status == 403 and answer["message"].startswith(f"dockmoat: {rule}: ")


def test_containers_get_a_private_cgroup_namespace(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, label: str
) -> None:
    """On this cgroup v1 host dockerd's default is the host's cgroup namespace; through
    the gateway a container gets its own, with both API versions that behave so."""
    host = os.readlink("/proc/self/ns/cgroup")
    for version in ("1.40", "1.41"):
        run = ["run", "--label", f"dmtest={label}", "--network", "none", busybox_image]
        result = subprocess.run(
            [DOCKER, *run, "readlink", "/proc/self/ns/cgroup"],
            env={**gateway.env(), "DOCKER_API_VERSION": version},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().startswith("cgroup:[")
        assert result.stdout.strip() != host, version
    modes = {c["HostConfig"]["CgroupnsMode"] for c in made(docker_client, label)}
    assert modes == {"private"}
    # An explicit choice is the client's: private is kept, host is refused.
    result = cli(gateway, "create", "--label", f"dmtest={label}", "--cgroupns", "host",
                 busybox_image)  # fmt: skip
    assert "dockmoat: containers.host-namespaces: " in result.stderr
