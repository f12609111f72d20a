"""DinD images whose entrypoint is dockerd itself, none at all, or a shell command.

Variants of `dockmoat-test/dind:latest` built here with the classic builder (metadata
only: no layer). The official image's `dockerd-entrypoint.sh` style is the base image
itself (its entrypoint is a script that execs its arguments). Before `daemon_command`,
an entrypoint that is dockerd got `dockerd dockerd --host=...` and exited with
"dockerd accepts no argument(s)".
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from dindtest_support import Dind

VARIANTS = {
    "dockerd": 'ENTRYPOINT ["dockerd"]\nCMD []',
    "dockerd-with-flags": 'ENTRYPOINT ["/usr/bin/dockerd", "--log-level=warn"]\nCMD []',
    "init-then-dockerd": 'ENTRYPOINT ["docker-init", "--", "dockerd"]\nCMD []',
    "none": 'ENTRYPOINT []\nCMD ["dockerd"]',
    "shell-command": "ENTRYPOINT /usr/bin/dockerd --host=tcp://0.0.0.0:2375",
    "dockerd-plain-tcp": 'ENTRYPOINT ["dockerd", "-H", "tcp://0.0.0.0:2375"]\nCMD []',
}


@pytest.fixture(scope="module")
def variants(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, dind_image: str
) -> Iterator[dict[str, str]]:
    """Tag per variant, built from the DinD image; removed at the end."""
    tags: dict[str, str] = {}
    try:
        for key, lines in VARIANTS.items():
            folder = tmp_path_factory.mktemp(f"ep-{key}")
            (folder / "Dockerfile").write_text(f"FROM {dind_image}\n{lines}\n")
            tag = f"dmtest-dind-ep-{key}:{secrets.token_hex(4)}"
            subprocess.run(
                ["docker", "build", "-q", "-t", tag, str(folder)],
                env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                capture_output=True,
                check=True,
            )
            tags[key] = tag
        yield tags
    finally:
        for tag in tags.values():
            docker_client.images.remove(tag, noprune=False)


@pytest.mark.parametrize("key", ["dockerd", "dockerd-with-flags", "init-then-dockerd", "none"])
def test_up_starts_dockerd_whatever_the_entrypoint(
    key: str,
    variants: dict[str, str],
    dind: Dind,
    dind_name: Callable[[], str],
    docker_client: docker.DockerClient,
    busybox_image: str,
) -> None:
    image = variants[key]
    config = docker_client.images.get(image).attrs["Config"]
    if key == "none":
        assert not config.get("Entrypoint")
    else:
        assert "dockerd" in config["Entrypoint"][-1] or "dockerd" in config["Entrypoint"][0]
    name = dind_name()
    up = dind.cli("dind", "up", name, "--image", image, "--preload", busybox_image,
                  "--no-pool", "--format", "json", check=False)  # fmt: skip
    assert up.returncode == 0, up.stderr
    info = dind.manager.info(name)
    ran = dind.docker(info, "run", "--rm", busybox_image, "echo", "nested")
    assert ran.stdout == "nested\n"
    # dockerd runs with dockmoat's arguments (and the image's own flags, where it has any).
    container = docker_client.containers.get(f"dockmoat-dind-{name}")
    top = container.top(ps_args="-o pid,args")["Processes"]
    dockerd = [p[-1] for p in top if Path(p[-1].split()[0]).name == "dockerd"]
    assert len(dockerd) == 1, top
    assert "--tlsverify" in dockerd[0]
    assert ("--log-level=warn" in dockerd[0]) == (key == "dockerd-with-flags")
    assert " dockerd " not in dockerd[0]
    down = dind.cli("dind", "down", name, check=False)
    assert down.returncode == 0, down.stderr


@pytest.mark.parametrize(
    ("key", "says"),
    [("shell-command", "shell command"), ("dockerd-plain-tcp", "'-H'")],
)
def test_an_entrypoint_that_would_lose_tls_is_refused_before_anything_is_made(
    key: str,
    says: str,
    variants: dict[str, str],
    dind: Dind,
    dind_name: Callable[[], str],
    docker_client: docker.DockerClient,
) -> None:
    name = dind_name()
    up = dind.cli("dind", "up", name, "--image", variants[key], "--no-pool", check=False)
    assert up.returncode != 0
    assert says in up.stderr and "Traceback" not in up.stderr
    assert docker_client.containers.list(all=True, filters={"name": name}) == []


def test_run_with_a_dind_image_whose_entrypoint_is_dockerd(
    variants: dict[str, str], dind: Dind, tmp_path: Path, dind_image: str, busybox_image: str
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "dockmoat", "run", "--mode", "dind", "-q",
         "--image", dind_image, "--dind-image", variants["dockerd"],
         "--preload", busybox_image, "--workspace", str(tmp_path), "--",
         "sh", "-c", f"docker run --rm {busybox_image} echo from-the-job"],
        capture_output=True, text=True, timeout=240, check=False, env=dind.env(),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == "from-the-job\n"
