"""`dockmoat run --mode dind`: interrupted while the nested daemon starts, and a warm pool."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import pytest
from run_support import (
    DOCKMOAT,
    JOB_IMAGE,
    assert_nothing_left,
    clean_env,
    dockmoat_run,
    killed_on_exit,
    popen_run,
    snapshot,
    wait_for_line,
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_during_set_up_leaves_nothing(
    docker_client: docker.DockerClient, dind_image: str, signum: signal.Signals
) -> None:
    before = snapshot(docker_client)
    proc = popen_run(
        "--mode", "dind", "--image", JOB_IMAGE, "--dind-image", dind_image, "--", "true"
    )
    with killed_on_exit(proc):
        # Interrupt once the nested daemon's container exists and is starting.
        seen = wait_for_line(proc.stderr, "starting the nested daemon")
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + rest
    assert "starting the job" not in rest
    assert_nothing_left(docker_client, before)


def test_dind_mode_takes_a_warm_daemon_from_a_running_pool(
    docker_client: docker.DockerClient, dind_image: str
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="dmtest-run-pool-"))
    sock, log = folder / "pool.sock", folder / "pool.log"
    before = snapshot(docker_client)
    with log.open("wb") as out:
        pool = subprocess.Popen(
            [
                *DOCKMOAT,
                "dind",
                "pool",
                "--size",
                "1",
                "--image",
                dind_image,
                "--socket",
                str(sock),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    try:
        deadline = time.monotonic() + 120
        while "warm daemon ready" not in log.read_text() and time.monotonic() < deadline:
            assert pool.poll() is None, log.read_text()
            time.sleep(0.2)
        result = dockmoat_run(
            "--mode",
            "dind",
            "--image",
            JOB_IMAGE,
            "--dind-image",
            dind_image,
            "--",
            "sh",
            "-c",
            "docker info --format '{{.Name}}'",
            env={"DOCKMOAT_DIND_POOL_SOCKET": str(sock)},
        )
        assert result.returncode == 0, result.stderr
        assert "took warm daemon" in result.stderr
        # The job talked to the pool's daemon (named after its pool instance).
        assert result.stdout.strip().startswith("pool-")
    finally:
        pool.terminate()
        pool.wait(timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
    assert_nothing_left(docker_client, before)


def test_dind_mode_keeps_its_cache_per_key_between_runs(
    docker_client: docker.DockerClient, dind_image: str, busybox_image: str
) -> None:
    key = f"dmtest-run-{int(time.time() * 1000) % 10**9}"
    before = snapshot(docker_client)
    common = ("--mode", "dind", "--image", JOB_IMAGE, "--dind-image", dind_image, "--cache", key)
    try:
        first = dockmoat_run(*common, "--preload", busybox_image, "--", "sh", "-c",
                             f"docker tag {busybox_image} dmtest-cached:1")  # fmt: skip
        assert first.returncode == 0, first.stderr
        second = dockmoat_run(*common, "--", "sh", "-c",
                              "docker image inspect -f '{{.Id}}' dmtest-cached:1")  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip().startswith("sha256:")  # the first run's layers, kept
        without = dockmoat_run("--mode", "dind", "--image", JOB_IMAGE, "--dind-image",
                               dind_image, "--", "sh", "-c",
                               "docker image inspect dmtest-cached:1")  # fmt: skip
        assert without.returncode != 0  # a run without the key starts empty
        refused = dockmoat_run("--mode", "socket", "--cache", key, "--", "true")
        assert refused.returncode == 2 and "--cache" in refused.stderr
    finally:
        for volume in docker_client.volumes.list(filters={"label": f"dockmoat.dind.cache={key}"}):
            volume.remove(force=True)
    assert_nothing_left(docker_client, before)
