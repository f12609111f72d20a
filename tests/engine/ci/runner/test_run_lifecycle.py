"""Exit codes, streaming, signals, missing images and clean-up of `dockmoat run`."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import docker
import pytest
from run_support import (
    JOB_IMAGE,
    assert_nothing_left,
    dockmoat_run,
    killed_on_exit,
    popen_run,
    snapshot,
    wait_for_line,
)


def test_exit_code_and_both_streams(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("from the workspace\n")
    before = snapshot(docker_client)
    result = dockmoat_run(
        "-q",
        "--mode",
        "socket",
        "--image",
        JOB_IMAGE,
        "--workspace",
        str(tmp_path),
        "-e",
        "GREETING=hi",
        "--",
        "sh",
        "-c",
        'pwd; cat data.txt; echo "$GREETING"; echo to-stderr >&2; echo made > out.txt; exit 7',
    )
    assert result.returncode == 7
    assert result.stdout.splitlines() == ["/workspace", "from the workspace", "hi"]
    assert "to-stderr" in result.stderr
    assert "dockmoat run: mode socket, exit 7;" in result.stderr
    assert (tmp_path / "out.txt").read_text() == "made\n"
    assert_nothing_left(docker_client, before)


def test_missing_image_fails_before_setting_anything_up(
    docker_client: docker.DockerClient, dind_image: str
) -> None:
    before = snapshot(docker_client)
    result = dockmoat_run(
        "--mode",
        "dind",
        "--dind-image",
        dind_image,
        "--image",
        "dmtest-no-such-image:1",
        "--",
        "true",
    )
    assert result.returncode == 3  # docs/exit-codes.md: what it needs is not there
    assert "never pulls" in result.stderr
    assert "dmtest-no-such-image:1" in result.stderr
    assert_nothing_left(docker_client, before)
    # Nothing was pulled either.
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get("dmtest-no-such-image:1")


def test_socket_mode_needs_a_unix_socket() -> None:
    result = dockmoat_run(
        "--mode", "socket", "--host", "tcp://127.0.0.1:2375", "--image", JOB_IMAGE, "--", "true"
    )
    assert result.returncode == 2
    assert "is not one" in result.stderr


def test_no_command_is_a_usage_error() -> None:
    result = dockmoat_run("--mode", "socket")
    assert result.returncode == 2


def test_sigint_reaches_the_job_and_dind_is_removed(
    docker_client: docker.DockerClient, dind_image: str
) -> None:
    before = snapshot(docker_client)
    proc = popen_run(
        "--mode",
        "dind",
        "--image",
        JOB_IMAGE,
        "--dind-image",
        dind_image,
        "--",
        "sh",
        "-c",
        'trap "echo got-int; exit 5" INT; docker run -d --name leftover '
        + dind_image
        + " sleep 1000 >/dev/null 2>&1; echo ready; while true; do sleep 0.1; done",
    )
    with killed_on_exit(proc):
        wait_for_line(proc.stdout, "ready")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err
    assert "got-int" in out
    assert "dockmoat run: mode dind, exit 5;" in err
    # The nested daemon, its network, volume and the job container are all gone.
    assert_nothing_left(docker_client, before)


def test_sigterm_ends_the_job_and_removes_the_container(docker_client: docker.DockerClient) -> None:
    before = snapshot(docker_client)
    proc = popen_run(
        "--mode", "socket", "--image", JOB_IMAGE, "--", "sh", "-c", "echo ready; exec sleep 300"
    )
    with killed_on_exit(proc):
        wait_for_line(proc.stdout, "ready")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    # sleep dies of SIGTERM: the init reports 128 + 15.
    assert proc.returncode == 143, err
    assert_nothing_left(docker_client, before)


def test_guarded_job_leftovers_are_removed(
    docker_client: docker.DockerClient, control_socket: Path, busybox_image: str
) -> None:
    before = snapshot(docker_client)
    result = dockmoat_run(
        "--mode",
        "guarded",
        "--control",
        str(control_socket),
        "--image",
        JOB_IMAGE,
        "--",
        "sh",
        "-c",
        f"docker run -d {busybox_image} sleep 1000 && docker volume create cache"
        " && docker network create net && docker ps -q | wc -l",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1"  # the job sees only its own container
    assert_nothing_left(docker_client, before)


def test_guarded_mode_without_serve_fails_clearly(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    before = snapshot(docker_client)
    result = dockmoat_run(
        "--mode",
        "guarded",
        "--control",
        str(tmp_path / "no-control.sock"),
        "--image",
        JOB_IMAGE,
        "--",
        "true",
    )
    assert result.returncode == 3  # docs/exit-codes.md: serve is unreachable
    assert "is `dockmoat serve` running" in result.stderr
    assert_nothing_left(docker_client, before)


def test_a_job_ignoring_signals_is_killed_by_the_third(docker_client: docker.DockerClient) -> None:
    before = snapshot(docker_client)
    proc = popen_run(
        "--mode",
        "socket",
        "--image",
        JOB_IMAGE,
        "--",
        "sh",
        "-c",
        'trap "echo ignored" INT TERM; echo ready; while true; do sleep 0.2; done',
    )
    with killed_on_exit(proc):
        wait_for_line(proc.stdout, "ready")
        for _ in range(3):
            proc.send_signal(signal.SIGINT)
            time.sleep(1.0)
        out, err = proc.communicate(timeout=60)
    assert "ignored" in out
    assert proc.returncode == 137, err  # 128 + SIGKILL
    assert_nothing_left(docker_client, before)


@pytest.mark.parametrize("mode", ["dind", "guarded"])
def test_a_failing_job_is_cleaned_up_too(
    mode: str,
    docker_client: docker.DockerClient,
    dind_image: str,
    busybox_image: str,
    control_socket: Path,
) -> None:
    extra = (
        ("--dind-image", dind_image, "--preload", busybox_image)
        if mode == "dind"
        else ("--control", str(control_socket))
    )
    before = snapshot(docker_client)
    result = dockmoat_run(
        "--mode",
        mode,
        "--image",
        JOB_IMAGE,
        *extra,
        "--",
        "sh",
        "-c",
        f"docker run -d {busybox_image} sleep 1000 >/dev/null"
        " && docker volume create cache >/dev/null && exit 3",
    )
    assert result.returncode == 3, result.stderr
    assert f"dockmoat run: mode {mode}, exit 3;" in result.stderr
    assert_nothing_left(docker_client, before)


def test_guarded_job_may_bind_its_workspace_and_nothing_else(
    docker_client: docker.DockerClient, control_socket: Path, busybox_image: str, tmp_path: Path
) -> None:
    (tmp_path / "marker.txt").write_text("inside the workspace\n")
    before = snapshot(docker_client)
    script = (
        f'docker run --rm -v "$DOCKMOAT_HOST_WORKSPACE:/w" {busybox_image} cat /w/marker.txt; '
        f"docker run --rm -v /etc:/x {busybox_image} cat /x/hostname; echo etc-exit=$?"
    )
    result = dockmoat_run(
        "--mode",
        "guarded",
        "--control",
        str(control_socket),
        "--image",
        JOB_IMAGE,
        "--workspace",
        str(tmp_path),
        "--",
        "sh",
        "-c",
        script,
    )
    assert result.returncode == 0, result.stderr
    assert "inside the workspace" in result.stdout
    # The guarded socket refused the host folder outside the workspace.
    assert "etc-exit=125" in result.stdout
    assert "containers.bind-mounts" in result.stderr, (
        result.stderr
    )  # the rule, as the CLI prints it
    assert_nothing_left(docker_client, before)
