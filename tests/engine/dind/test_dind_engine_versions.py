"""`dockmoat dind up --image` with the DinD image of every engine version the harness
builds (Debian's docker.io 20.10, 26.1 and the host's 28.x; docs/testing.md, "The test
images"), and 26.1 and 28.x once more with the containerd image store: on each, the
seed's pipeline in small (build FROM a preloaded base, run the image, tag it), the
nested engine's own version, and `--cache KEY` keeping the layers for the next daemon
on the same key (the second build entirely from cache, the built image still there).

The nested-engine matrix (tests/engine/matrix/) runs the full pipeline and a CI day on
the same images through the guard; this file is about `dind up` itself per engine and
its layer cache, which the matrix does not use."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from dindtest_support import Dind

from dockmoat.dind import naming
from harness.images import dind_tag, engine_trees, engine_version, host_binary

HOST_VERSION = engine_version(host_binary("dockerd"))
VERSIONS = sorted(
    {HOST_VERSION, *engine_trees()}, key=lambda v: tuple(int(p) for p in v.split("."))
)
# (engine version, containerd image store): every engine with its graph driver
# (overlay2), and those from 26.1 on (the host's 28.x included) once more with
# `features.containerd-snapshotter` (20.10 has no containerd image store).
CASES = [(v, False) for v in VERSIONS] + [
    (v, True) for v in VERSIONS if tuple(int(p) for p in v.split(".")) >= (26, 1)
]
IDS = [f"engine-{v}" + ("-containerd-store" if store else "") for v, store in CASES]
CONTAINERD_STORE = {"features": {"containerd-snapshotter": True}}
SNAPSHOTTER = "io.containerd.snapshotter.v1"

APP = """\
FROM dockmoat-test/busybox:latest
RUN echo built > /built
RUN sleep 1 && echo tested > /tested
CMD ["cat", "/built", "/tested"]
"""
CACHED_STEPS = 3  # RUN, RUN, CMD


@pytest.fixture(scope="module")
def containerd_store_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """`make(version)`: that engine's DinD image with /etc/docker/daemon.json turning the
    containerd image store on: one small layer on `dockmoat-test/dind:<version>` (a
    classic build of a local image, nothing pulled); the module removes them at its end."""
    made: dict[str, str] = {}

    def make(version: str) -> str:
        if version not in made:
            base = dind_tag(version)
            docker_client.images.get(base)  # the harness builds it (scripts/test-engine up)
            context = tmp_path_factory.mktemp("cstore")
            (context / "daemon.json").write_text(json.dumps(CONTAINERD_STORE) + "\n")
            (context / "Dockerfile").write_text(
                f"FROM {base}\nCOPY daemon.json /etc/docker/daemon.json\n"
            )
            tag = f"dmtest-dind-cstore:{version}-{secrets.token_hex(4)}"
            docker_client.images.build(
                path=str(context), tag=tag, rm=True, forcerm=True, pull=False
            )
            made[version] = tag
        return made[version]

    yield make
    for tag in made.values():
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(tag)


def _up(dind: Dind, name: str, image: str, key: str, *extra: str) -> dict[str, str]:
    """`dockmoat dind up` (the CLI, no pool) on the cache key; the client environment."""
    up = dind.cli(
        "dind", "up", name, "--image", image, "--cache", key, "--no-pool",
        "--format", "json", "--quiet", *extra, check=False,
    )  # fmt: skip
    assert up.returncode == 0, f"dind up --image {image} failed: {up.stderr[-3000:]}"
    env: dict[str, str] = json.loads(up.stdout)["env"]
    assert env["DOCKER_TLS_VERIFY"] == "1" and env["DOCKER_HOST"].startswith("tcp://")
    return env


def _down(dind: Dind, name: str) -> None:
    down = dind.cli("dind", "down", name, check=False)
    assert down.returncode == 0, down.stderr


def _docker(
    dind: Dind, env: dict[str, str], *args: str, stdin: str | None = None, buildkit: bool = False
) -> str:
    """The host's docker CLI against the nested daemon over mutual TLS; its stdout."""
    proc = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=dind.env(**env, DOCKER_BUILDKIT="1" if buildkit else "0", DOCKER_CLI_HINTS="false"),
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr  # BuildKit's progress goes to stderr


def _pipeline(dind: Dind, env: dict[str, str], context: Path, buildkit: bool = False) -> str:
    """The seed's pipeline in small: build, test in the image, tag; the build's output."""
    tag = "dmtest-app-bk:1" if buildkit else "dmtest-app:1"
    extra = ("--progress=plain",) if buildkit else ()
    built = _docker(dind, env, "build", *extra, "-t", tag, str(context), buildkit=buildkit)
    assert _docker(dind, env, "run", "--rm", tag).split() == ["built", "tested"]
    _docker(dind, env, "tag", tag, tag.replace(":1", ":release"))
    return built


@pytest.mark.slow  # two cold starts per engine: 20-30 s each
@pytest.mark.parametrize(("version", "containerd_store"), CASES, ids=IDS)
def test_dind_up_runs_the_pipeline_and_keeps_its_cache_on_each_engine(
    dind: Dind,
    dind_name: Callable[[], str],
    unique_name: Callable[[str], str],
    busybox_image: str,
    docker_client: docker.DockerClient,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    version: str,
    containerd_store: bool,
) -> None:
    if containerd_store:
        image = request.getfixturevalue("containerd_store_image")(version)
    else:
        image = dind_tag(version)
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"{image} is missing: run scripts/test-engine up")
    context = tmp_path / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(APP)
    key = unique_name("cache")
    try:
        first_name = dind_name()
        first = _up(dind, first_name, image, key, "--preload", busybox_image)
        server = _docker(dind, first, "version", "--format", "{{.Server.Version}}").strip()
        assert server.startswith(f"{version}."), server
        driver = _docker(dind, first, "info", "--format", "{{.Driver}} {{json .DriverStatus}}")
        assert (SNAPSHOTTER in driver) == containerd_store, driver
        cold = _pipeline(dind, first, context)
        assert "Using cache" not in cold
        if containerd_store:
            _pipeline(dind, first, context, buildkit=True)
        _down(dind, first_name)

        # The next daemon on the key: the images are there, every step comes from cache.
        second_name = dind_name()
        second = _up(dind, second_name, image, key)
        images = _docker(dind, second, "images", "--format", "{{.Repository}}:{{.Tag}}")
        assert {"dmtest-app:1", "dmtest-app:release", busybox_image} <= set(images.split())
        warm = _pipeline(dind, second, context)
        assert warm.count("Using cache") == CACHED_STEPS, warm
        if containerd_store:
            # BuildKit's cache lives in the data root too.
            warm_bk = _pipeline(dind, second, context, buildkit=True)
            assert warm_bk.count(" CACHED") == CACHED_STEPS - 1, warm_bk  # the RUNs
        _down(dind, second_name)
    finally:
        dind.cleanup()
        with contextlib.suppress(docker.errors.APIError):
            docker_client.volumes.get(naming.cache_volume_name(key)).remove()
