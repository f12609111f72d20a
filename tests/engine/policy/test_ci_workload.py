"""A whole ordinary CI job through `dockmoat serve` (baseline): zero false denials.

build, run with a workspace bind from the allowed folder, exec, cp both ways,
logs, networks, volumes, tag, save/load, compose up/ps/exec/logs/down; then the
audit log must hold no denial at all.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from policygw import Gateway

from harness.clients import client
from support.audit_file import settled_entries

DOCKER = client("docker") or "docker"
COMPOSE_V1 = client("docker-compose-v1") or "docker-compose-v1"
#: Builds here use the classic builder (and compose v1, which builds through /build);
#: BuildKit's path has its own tests.
CLASSIC = {"DOCKER_BUILDKIT": "0"}
# Binds the workspace and builds from it: needs the host's mount namespace.
pytestmark = pytest.mark.host_namespaces


@pytest.fixture
def project(
    gateway: Gateway, unique_name: Callable[[str], str], docker_client: docker.DockerClient
) -> Iterator[str]:
    name = unique_name("ci").replace("-", "")
    yield name
    flt = {"label": f"dmtest={name}"}
    for container in docker_client.containers.list(all=True, filters=flt):
        container.remove(force=True, v=True)
    for network in docker_client.networks.list(filters=flt):
        network.remove()
    for volume in docker_client.volumes.list(filters=flt):
        volume.remove(force=True)
    for image in docker_client.images.list(filters={"reference": f"{name}*"}):
        docker_client.images.remove(image.id, force=True)


def run(gateway: Gateway, *argv: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        argv,
        env={**gateway.env(), **CLASSIC},
        input=stdin,
        capture_output=True,
        timeout=180,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, (argv, result.stderr.decode(errors="replace"))
    return result.stdout.decode(errors="replace")


@pytest.mark.parametrize("buildkit", ["0", "1"], ids=["classic", "buildkit"])
def test_ordinary_ci_day_has_no_false_denials(
    gateway: Gateway,
    busybox_image: str,
    project: str,
    tmp_path: Path,
    buildkit: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same day with `docker build` through BuildKit (buildx over /grpc and /session,
    # read by the guard); compose v1 builds through /build either way.
    monkeypatch.setitem(CLASSIC, "DOCKER_BUILDKIT", buildkit)
    ws = gateway.workspace / project
    ws.mkdir()
    (ws / "Dockerfile").write_text(
        f"FROM {busybox_image}\nLABEL dmtest={project}\nRUN echo built > /built\n"
    )
    (ws / "input.txt").write_text("from the workspace\n")
    before = len(settled_entries(gateway.audit))
    d = DOCKER
    label = ["--label", f"dmtest={project}"]

    run(gateway, d, "version")
    run(gateway, d, "info")
    run(gateway, d, "build", "-t", f"{project}:1", str(ws))
    run(gateway, d, "tag", f"{project}:1", f"{project}:2")
    out = run(
        gateway, d, "run", "--rm", *label, "--network", "none", "-v", f"{ws}:/workspace",
        "-w", "/workspace", f"{project}:1", "sh", "-c", "cat /built input.txt; echo out > made.txt",
    )  # fmt: skip
    assert out.split() == ["built", "from", "the", "workspace"]
    assert (ws / "made.txt").read_text() == "out\n"
    out = run(
        gateway,
        d,
        "run",
        "--rm",
        "-i",
        *label,
        "--network",
        "none",
        busybox_image,
        "cat",
        stdin=b"piped\n",
    )
    assert out == "piped\n"

    run(gateway, d, "network", "create", *label, f"{project}-net")
    run(gateway, d, "volume", "create", *label, f"{project}-vol")
    ident = run(
        gateway, d, "run", "-d", *label, "--network", f"{project}-net",
        "-v", f"{project}-vol:/data", "-p", "127.0.0.1::80", busybox_image,
        "sh", "-c", "echo started; sleep 300",
    ).strip()  # fmt: skip
    assert run(gateway, d, "exec", ident, "sh", "-c", "echo hi > /data/x; cat /data/x") == "hi\n"
    assert run(gateway, d, "exec", "-i", ident, "cat", stdin=b"in\n") == "in\n"
    run(gateway, d, "cp", str(ws / "input.txt"), f"{ident}:/tmp/input.txt")
    run(gateway, d, "cp", f"{ident}:/tmp/input.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "from the workspace\n"
    assert "started" in run(gateway, d, "logs", ident)
    run(gateway, d, "top", ident)
    run(gateway, d, "stats", "--no-stream", ident)
    run(gateway, d, "update", "--memory", "128m", "--memory-swap", "256m", "--cpus", "1", ident)
    run(gateway, d, "update", "--restart", "on-failure", "--pids-limit", "200", ident)
    run(gateway, d, "pause", ident)
    run(gateway, d, "unpause", ident)
    run(gateway, d, "rename", ident, f"{project}-renamed")
    run(gateway, d, "commit", "-c", "WORKDIR /srv", ident, f"{project}:committed")
    run(gateway, d, "image", "rm", f"{project}:committed")
    run(gateway, d, "rm", "-f", ident)
    run(gateway, d, "network", "rm", f"{project}-net")
    run(gateway, d, "volume", "rm", f"{project}-vol")

    archive = tmp_path / "img.tar"
    run(gateway, d, "save", "-o", str(archive), f"{project}:2")
    run(gateway, d, "image", "rm", f"{project}:2")
    run(gateway, d, "load", "-i", str(archive))

    (ws / "docker-compose.yml").write_text(
        f"""\
version: "3.8"
services:
  app:
    build: .
    image: {project}:compose
    command: sh -c "echo up > /data/state; sleep 300"
    volumes: ["./:/workspace", "data:/data"]
    ports: ["80"]
    labels: {{dmtest: {project}}}
  side:
    image: {busybox_image}
    command: sleep 300
    depends_on: [app]
    labels: {{dmtest: {project}}}
volumes:
  data:
    labels: {{dmtest: {project}}}
networks:
  default:
    labels: {{dmtest: {project}}}
"""
    )
    compose = [COMPOSE_V1, "-p", project]
    run(gateway, *compose, "up", "-d", "--build", cwd=ws)
    assert "Up" in run(gateway, *compose, "ps", cwd=ws)
    out = run(gateway, *compose, "exec", "-T", "app", "sh", "-c", "cat /built /data/state", cwd=ws)
    assert out.split() == ["built", "up"]
    run(gateway, *compose, "logs", cwd=ws)
    run(gateway, *compose, "down", "-v", cwd=ws)

    entries = settled_entries(gateway.audit)[before:]
    # The listener is a tenant: compose's "does it exist yet?" look-ups of its own
    # network and volume, before it creates them, are answered 404 by the tenancy
    # stage (as dockerd does for a missing one). Those are not denials; nothing else may be.
    # By routed path: the API version in the path is the one the client negotiated
    # with this engine (1.41 on 20.10, 1.51 on 28.5).
    probes = {
        ("networks.inspect", f"/networks/{project}_default"),
        ("volumes.inspect", f"/volumes/{project}_data"),
    }
    denials = [
        e
        for e in entries
        if e.get("decision") == "deny"
        and not (
            e.get("rule") == "tenancy.not-found"
            and e.get("status") == 404
            and (e.get("route"), e.get("routed_path")) in probes
        )
    ]
    assert denials == [], denials
    rewritten = [e for e in entries if e.get("decision") == "rewrite"]
    assert rewritten  # PidsLimit injected, ports bound to 127.0.0.1
