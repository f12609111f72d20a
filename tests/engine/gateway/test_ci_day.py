"""A CI job's day through the gateway with the real docker CLIs and both composes.

The CLIs are those of the matrix (tests/harness/clients.py): the current one (28.x),
26.1 and 20.10; Compose v2 (the CLI plugin) and docker-compose v1.

Everything runs through `dockmoat serve` (permissive, baseline without tenancy, and
the default: baseline with its listener a tenant) and the effects are checked on the
engine itself (under the tenant's engine-side names), and outputs against the raw socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound
from gwserve import Served

from harness.clients import all_clients, client
from harness.endpoint import Endpoint

CLIENTS = list(all_clients().values())
#: Builds here use the classic builder on purpose; BuildKit's path (buildx, /grpc and
#: /session) has its own tests.
CLASSIC = {"DOCKER_BUILDKIT": "0"}


@pytest.fixture(scope="module", params=["permissive", "baseline", "tenant"])
def gateway(request: pytest.FixtureRequest) -> Served:
    served: Served = request.getfixturevalue(request.param)
    return served


def run(
    cli: str, gw: Served | None, *args: str, input: bytes | None = None, timeout: float = 120,
    cwd: Path | None = None, check: bool = True,
) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    # The raw side is the engine under test ($DOCKER_HOST, as the docker_host fixture).
    env = gw.env() if gw is not None else {**os.environ, "DOCKER_HOST": Endpoint.from_env().url}
    env["DOCKER_CLI_HINTS"] = "false"
    result = subprocess.run(
        [cli, *args], input=input, capture_output=True, timeout=timeout, env=env, cwd=cwd,
        check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cli} {args}: rc={result.returncode} {result.stderr.decode()[-2000:]}"
        )
    return result


@pytest.fixture
def cleanup(docker_client: docker.DockerClient) -> Iterator[list[tuple[str, str]]]:
    """Resources a test made: ("container"|"image"|"volume"|"network", name)."""
    made: list[tuple[str, str]] = []
    yield made
    for kind, name in reversed(made):
        try:
            if kind == "container":
                docker_client.containers.get(name).remove(force=True)
            elif kind == "image":
                docker_client.images.remove(name, force=True)
            elif kind == "volume":
                docker_client.volumes.get(name).remove(force=True)
            elif kind == "network":
                docker_client.networks.get(name).remove()
        except NotFound:
            pass


@pytest.mark.parametrize("cli", CLIENTS)
def test_version_info_match_raw(cli: str, gateway: Served) -> None:
    fmt = "{{.Server.Version}} {{.Server.APIVersion}}"
    assert (
        run(cli, gateway, "version", "--format", fmt).stdout
        == run(cli, None, "version", "--format", fmt).stdout
    )
    info = json.loads(run(cli, gateway, "info", "--format", "{{json .}}").stdout)
    assert info["ID"]


@pytest.mark.parametrize("cli", CLIENTS)
def test_run_stdin_and_exit_codes(cli: str, gateway: Served, busybox_image: str) -> None:
    out = run(cli, gateway, "run", "--rm", "-i", busybox_image, "sh", "-c", "cat; echo done",
              input=b"hello\n" * 1000)  # fmt: skip
    assert out.stdout == b"hello\n" * 1000 + b"done\n"
    failed = run(cli, gateway, "run", "--rm", busybox_image, "sh", "-c", "exit 7", check=False)
    assert failed.returncode == 7
    raw = run(cli, None, "run", "--rm", busybox_image, "cat", "/etc/passwd").stdout
    assert run(cli, gateway, "run", "--rm", busybox_image, "cat", "/etc/passwd").stdout == raw


@pytest.mark.parametrize("cli", CLIENTS)
def test_detached_exec_logs_cp_top_stats_wait(
    cli: str,
    gateway: Served,
    busybox_image: str,
    unique_name: Callable[[str], str],
    cleanup: list[tuple[str, str]],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    name = unique_name("day")
    cleanup.append(("container", gateway.engine_name(name)))
    run(cli, gateway, "run", "-d", "--name", name, busybox_image, "sh", "-c",
        "echo started; while true; do echo tick; sleep 0.2; done")  # fmt: skip
    assert docker_client.containers.get(gateway.engine_name(name)).status == "running"
    assert run(cli, gateway, "exec", name, "echo", "plain").stdout == b"plain\n"
    assert run(cli, gateway, "exec", "-i", name, "cat", input=b"x" * 100000).stdout == b"x" * 100000
    assert run(cli, gateway, "exec", name, "sh", "-c", "exit 5", check=False).returncode == 5
    assert b"started" in run(cli, gateway, "logs", name).stdout
    follow = subprocess.Popen([cli, "logs", "-f", name], stdout=subprocess.PIPE, env=gateway.env())
    assert follow.stdout is not None
    seen = b""
    while seen.count(b"tick") < 5:
        seen += follow.stdout.read1(4096)  # type: ignore[attr-defined]
    follow.kill()
    follow.wait()
    src = tmp_path / "in.txt"
    src.write_bytes(os.urandom(300000))
    run(cli, gateway, "cp", str(src), f"{name}:/tmp/in.txt")
    run(cli, gateway, "cp", f"{name}:/tmp/in.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()
    assert b"while true" in run(cli, gateway, "top", name).stdout
    assert name.encode() in run(cli, gateway, "stats", "--no-stream", name).stdout
    run(cli, gateway, "stop", "-t", "1", name)
    assert run(cli, gateway, "wait", name).stdout.strip() in (b"137", b"143", b"0")
    run(cli, gateway, "rm", name)
    with pytest.raises(NotFound):
        docker_client.containers.get(gateway.engine_name(name))


@pytest.mark.parametrize("cli", CLIENTS)
def test_build_tag_save_load(
    cli: str,
    gateway: Served,
    busybox_image: str,
    unique_name: Callable[[str], str],
    cleanup: list[tuple[str, str]],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    tag = unique_name("img") + ":1"
    cleanup.append(("image", tag))
    cleanup.append(("image", tag + "-b"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "blob").write_bytes(os.urandom(20 * 1024 * 1024))
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY blob /blob\nRUN echo built >/b\n")
    result = subprocess.run([cli, "build", "-q", "-t", tag, str(ctx)], capture_output=True,
                            env=gateway.env(**CLASSIC), timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    image = docker_client.images.get(tag)
    run(cli, gateway, "tag", tag, tag + "-b")
    assert tag + "-b" in docker_client.images.get(tag + "-b").tags
    out = run(cli, gateway, "run", "--rm", tag, "sh", "-c", "cat /b; wc -c </blob").stdout
    assert out.split() == [b"built", b"20971520"]
    tar = tmp_path / "img.tar"
    run(cli, gateway, "save", "-o", str(tar), tag)
    assert tar.stat().st_size > 20 * 1024 * 1024
    run(cli, gateway, "rmi", tag, tag + "-b")
    with pytest.raises(NotFound):
        docker_client.images.get(tag)
    assert b"Loaded image" in run(cli, gateway, "load", "-i", str(tar)).stdout
    assert docker_client.images.get(tag).id == image.id


@pytest.mark.parametrize("cli", CLIENTS)
def test_networks_volumes_events_prune(
    cli: str,
    gateway: Served,
    busybox_image: str,
    unique_name: Callable[[str], str],
    cleanup: list[tuple[str, str]],
    docker_client: docker.DockerClient,
) -> None:
    net, vol, ctr = unique_name("net"), unique_name("vol"), unique_name("ctr")
    cleanup += [
        ("network", gateway.engine_name(net)),
        ("volume", gateway.engine_name(vol)),
        ("container", gateway.engine_name(ctr)),
    ]
    since = str(int(time.time()) - 1)
    run(cli, gateway, "network", "create", net)
    run(cli, gateway, "volume", "create", vol)
    assert docker_client.networks.get(gateway.engine_name(net)).name == gateway.engine_name(net)
    assert docker_client.volumes.get(gateway.engine_name(vol)).name == gateway.engine_name(vol)
    out = run(
        cli,
        gateway,
        "run",
        "--name",
        ctr,
        "--label",
        f"dmtest={ctr}",
        "--network",
        net,
        "-v",
        f"{vol}:/data",
        busybox_image,
        "sh",
        "-c",
        "echo v >/data/f; cat /data/f",
    )
    assert out.stdout == b"v\n"  # fmt: skip
    until = str(int(time.time()) + 1)
    time.sleep(1.2)
    events = run(cli, gateway, "events", "--since", since, "--until", until, "--filter",
                 f"container={ctr}", "--format", "{{.Action}}").stdout.split()  # fmt: skip
    assert b"create" in events
    assert b"die" in events
    pruned = run(cli, gateway, "container", "prune", "-f", "--filter", f"label=dmtest={ctr}")
    assert pruned.returncode == 0
    with pytest.raises(NotFound):
        docker_client.containers.get(gateway.engine_name(ctr))
    run(cli, gateway, "network", "rm", net)
    run(cli, gateway, "volume", "rm", vol)
    with pytest.raises(NotFound):
        docker_client.volumes.get(gateway.engine_name(vol))


@pytest.mark.parametrize("cli", CLIENTS)
def test_attach(
    cli: str,
    gateway: Served,
    busybox_image: str,
    unique_name: Callable[[str], str],
    cleanup: list[tuple[str, str]],
) -> None:
    name = unique_name("att")
    cleanup.append(("container", gateway.engine_name(name)))
    run(
        cli,
        gateway,
        "create",
        "-i",
        "--name",
        name,
        busybox_image,
        "sh",
        "-c",
        "read x; echo got $x",
    )
    out = run(cli, gateway, "start", "-a", "-i", name, input=b"abc\n")
    assert out.stdout == b"got abc\n"


def test_compose_v1(
    gateway: Served, busybox_image: str, unique_name: Callable[[str], str], tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    project = unique_name("cmp").replace("-", "")
    (tmp_path / "docker-compose.yml").write_text(
        "version: '3'\n"
        "services:\n"
        "  web:\n"
        f"    image: {busybox_image}\n"
        "    command: sh -c 'echo hello-from-web; while true; do sleep 1; done'\n"
        "  worker:\n"
        f"    image: {busybox_image}\n"
        "    command: sh -c 'echo worker-up; sleep 3600'\n"
    )
    v1 = client("docker-compose-v1")
    assert v1 is not None, "docker-compose v1 is missing: run `make setup` as root"
    compose = [v1, "-p", project]
    env = gateway.env()

    def dc(*args: str) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([*compose, *args], cwd=tmp_path, env=env, capture_output=True,
                                timeout=180, check=False)  # fmt: skip
        assert result.returncode == 0, (args, result.stderr.decode()[-2000:])
        return result

    try:
        dc("up", "-d")
        running = docker_client.containers.list(
            filters={"label": f"com.docker.compose.project={project}"}
        )
        assert len(running) == 2
        assert b"web" in dc("ps").stdout
        deadline = time.monotonic() + 20
        while b"hello-from-web" not in dc("logs", "web").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert dc("exec", "-T", "web", "echo", "in-web").stdout.strip() == b"in-web"
    finally:
        subprocess.run([*compose, "down", "-t", "1"], cwd=tmp_path, env=env, capture_output=True,
                       timeout=180, check=False)  # fmt: skip
    left = docker_client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"}
    )
    assert left == []


COMPOSE_V2 = """\
services:
  db:
    image: {image}
    command: sh -c 'touch /tmp/ready; echo db-up; exec sleep 3600'
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 2s
      retries: 30
    volumes: [data:/data]
  app:
    image: {image}
    command: sh -c 'echo app-up; exec sleep 3600'
    depends_on:
      db:
        condition: service_healthy
  migrate:
    image: {image}
    command: sh -c 'echo migrated > /data/done'
    volumes: [data:/data]
    profiles: [tools]
volumes:
  data: {{}}
"""


@pytest.mark.parametrize("cli", [c for c in CLIENTS if not c.endswith("docker-20.10")])
def test_compose_v2(
    cli: str,
    gateway: Served,
    busybox_image: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    """`docker compose` (v2, the CLI plugin): up --wait on healthchecks and depends_on
    conditions, run --rm, exec, logs -f, down -v, all by the project's own names."""
    project = unique_name("cmp2").replace("-", "")
    (tmp_path / "compose.yaml").write_text(COMPOSE_V2.format(image=busybox_image))
    env = {**gateway.env(), "COMPOSE_PROGRESS": "plain"}
    label = {"label": f"com.docker.compose.project={project}"}

    def dc(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([cli, "compose", "-p", project, *args], cwd=tmp_path, env=env,
                                capture_output=True, timeout=timeout, check=False)  # fmt: skip
        assert result.returncode == 0, (args, result.stderr.decode()[-2000:])
        return result

    try:
        dc("up", "-d", "--wait", "--pull", "never")
        running = docker_client.containers.list(filters=label)
        assert len(running) == 2
        assert all(c.attrs["State"]["Status"] == "running" for c in running)
        health = [c.attrs["State"].get("Health", {}).get("Status") for c in running]
        assert "healthy" in health
        ps = json.loads("[" + ",".join(dc("ps", "--format", "json").stdout.decode().split()) + "]")
        assert {entry["Service"] for entry in ps} == {"db", "app"}
        assert dc("exec", "-T", "app", "echo", "in-app").stdout.strip() == b"in-app"
        dc("--profile", "tools", "run", "--rm", "-T", "migrate")
        done = dc("exec", "-T", "db", "cat", "/data/done").stdout.strip()
        assert done == b"migrated"
        # logs -f follows until the stream is cut; a bounded read shows both services.
        follow = subprocess.Popen([cli, "compose", "-p", project, "logs", "-f", "--no-color"],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        seen = b""
        deadline = time.monotonic() + 30
        assert follow.stdout is not None
        os.set_blocking(follow.stdout.fileno(), False)
        while not (b"db-up" in seen and b"app-up" in seen) and time.monotonic() < deadline:
            seen += follow.stdout.read() or b""
            time.sleep(0.1)
        follow.terminate()
        follow.wait(timeout=10)
        assert b"db-up" in seen and b"app-up" in seen
    finally:
        subprocess.run([cli, "compose", "-p", project, "down", "-v", "-t", "1"], cwd=tmp_path,
                       env=env, capture_output=True, timeout=180, check=False)  # fmt: skip
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.volumes.list(filters=label) == []
