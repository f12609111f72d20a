"""Compose files that use the dockmoat images, run as written with `docker compose up`.

- The seed's socket-proxy compose file with dockmoat in place of
  tecnativa/docker-socket-proxy (examples/socket-proxy/compose.yml): its client,
  unchanged (`DOCKER_HOST=tcp://socket-proxy:2375`), builds and runs an image
  through it, and the body-aware policy refuses what the URL filter let through.
- `dockmoat generate compose --mode guarded` and `--mode dind`: the files run as
  generated, their runner job building an image and running its test.

Only the client image is swapped for a local one where the file names a Docker Hub
image (no registry here): dockmoat/docker-cli, built by `make image`, and the job's
own command, which the seed's file leaves to the user.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from deploysupport import ROOT, Images
from ruamel.yaml import YAML

from dockmoat.ci.generate import Mode, Options, System, generate

pytestmark = pytest.mark.engine

BUSYBOX = Path("/usr/bin/busybox")
COMPOSE_V2 = ["docker", "compose"]


def _up(folder: Path, project: str, exit_from: str, timeout: float = 240) -> str:
    done = subprocess.run(
        [
            *COMPOSE_V2, "-p", project, "up", "--abort-on-container-exit",
            "--exit-code-from", exit_from, "--no-color",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    return log


def _workspace(folder: Path, base: str) -> None:
    """A Dockerfile the job builds: FROM `base`, or FROM scratch with a static busybox."""
    if base == "scratch":
        shutil.copy(BUSYBOX, folder / "busybox")
        (folder / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            "RUN echo built-in-the-job > /built\n"
        )
    else:
        (folder / "Dockerfile").write_text(f"FROM {base}\nRUN echo built-in-the-job > /built\n")


def test_seed_socket_proxy_file_with_dockmoat_serves_its_client_unchanged(
    deploy_images: Images, project: str, tmp_path: Path
) -> None:
    yaml = YAML()
    doc = yaml.load((ROOT / "examples/socket-proxy/compose.yml").read_text())
    proxy, runner = doc["services"]["socket-proxy"], doc["services"]["ci-runner"]
    assert proxy["image"] == deploy_images.guard
    assert runner["environment"] == ["DOCKER_HOST=tcp://socket-proxy:2375"]
    for switch in ("CONTAINERS=1", "POST=1", "BUILD=1", "EXEC=0", "COMMIT=0"):
        assert switch in proxy["environment"]
    # The job: the seed leaves it to the user; ours waits for the proxy (as the
    # generated files' jobs do), builds, runs, and tries what the URL filter allowed.
    runner["image"] = deploy_images.cli
    runner["working_dir"] = "/workspace"
    runner["volumes"] = ["./:/workspace"]
    runner["command"] = [
        "sh", "-c",
        "i=0; until docker version >/dev/null 2>&1; do i=$$((i+1)); "
        '[ "$$i" -lt 60 ] || exit 3; sleep 1; done; '
        "set -e; DOCKER_BUILDKIT=0 docker build -q -t $$TAG . >/dev/null; "
        "docker run --rm $$TAG cat /built; "
        "if docker run --rm --privileged $$TAG true 2>/tmp/err; then exit 4; fi; "
        "grep -o containers.privileged /tmp/err; "
        "if docker run --rm -v /:/host $$TAG true 2>/tmp/err; then exit 5; fi; "
        "grep -o containers.bind-mounts /tmp/err; docker rmi -f $$TAG >/dev/null",
    ]  # fmt: skip
    runner["environment"].append(f"TAG=dmdeploy-{project}:1")
    with (tmp_path / "compose.yml").open("w") as out:
        yaml.dump(doc, out)
    _workspace(tmp_path, "dockmoat-test/busybox:latest")
    log = _up(tmp_path, project, "ci-runner")
    assert "built-in-the-job" in log
    assert "containers.privileged" in log and "containers.bind-mounts" in log
    assert "plain TCP on the private container network" in log


def test_generated_guarded_compose_runs_as_generated(
    deploy_images: Images, project: str, tmp_path: Path
) -> None:
    text = generate(
        Options(
            system=System.COMPOSE,
            mode=Mode.GUARDED,
            job_image=deploy_images.cli,
            image_name=project,  # the job tags this image on the host's engine
            test_command="cat /built",
            wait_seconds=30,
        )
    )
    assert f"image: {deploy_images.guard}" in text  # the default names the built image
    (tmp_path / "compose.yml").write_text(text)
    _workspace(tmp_path, "dockmoat-test/busybox:latest")
    try:
        log = _up(tmp_path, project, "runner")
        assert "built-in-the-job" in log
        # Run again: the guard's state volume remembers the job's own tag, so the
        # second build may re-tag it (without it, the tag would look foreign).
        subprocess.run([*COMPOSE_V2, "-p", project, "down", "-t", "3"], cwd=tmp_path,
                       capture_output=True, check=False, timeout=120)  # fmt: skip
        assert "built-in-the-job" in _up(tmp_path, project, "runner")
    finally:
        subprocess.run(["docker", "rmi", "-f", f"registry.example.com/{project}:dev"],
                       capture_output=True, check=False, timeout=60)  # fmt: skip


def test_generated_dind_compose_runs_as_generated(
    deploy_images: Images, project: str, tmp_path: Path
) -> None:
    text = generate(
        Options(
            system=System.COMPOSE,
            mode=Mode.DIND,
            dind_image=deploy_images.dind,
            job_image=deploy_images.cli,
            test_command="cat /built",
            wait_seconds=60,
        )
    )
    (tmp_path / "compose.yml").write_text(text)
    _workspace(tmp_path, "scratch")  # the nested daemon has no images of its own
    log = _up(tmp_path, project, "runner", timeout=300)
    assert "built-in-the-job" in log
