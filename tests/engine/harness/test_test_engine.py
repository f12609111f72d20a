"""`scripts/test-engine`: starts only when needed, stops only what it started, quiet on reuse.

The start/stop tests use a second, isolated dockerd (own socket, data and exec
roots, vfs, and its own network namespace) so the shared engine is never
touched. The network namespace matters: a dockerd sharing the host's would
delete or reconfigure the shared engine's docker0 bridge and iptables rules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli, daemon
from harness.endpoint import Endpoint

REPO = Path(__file__).resolve().parents[3]
NEW_NETNS = ("unshare", "--net")


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Short path: unix socket paths are limited to 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="dmte-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def isolated_args(root: Path) -> list[str]:
    (root / "daemon.json").write_text("{}")
    return [
        *("--config-file", str(root / "daemon.json")),
        *("--data-root", str(root / "data"), "--exec-root", str(root / "exec")),
        *("--iptables=false", "--ip-masq=false"),
        *("--storage-driver", "vfs"),
    ]


@pytest.fixture
def second_engine(scratch: Path) -> Iterator[tuple[Endpoint, daemon.Paths]]:
    endpoint = Endpoint(f"unix://{scratch}/docker.sock")
    paths = daemon.Paths(scratch / "state")
    pid = daemon.start(endpoint, paths, isolated_args(scratch), launcher=NEW_NETNS)
    try:
        yield endpoint, paths
    finally:
        if daemon.is_dockerd(pid):
            daemon.stop(pid, paths)


def test_start_records_and_down_stops_what_was_started(
    second_engine: tuple[Endpoint, daemon.Paths],
) -> None:
    endpoint, paths = second_engine
    assert endpoint.ping()
    pid = daemon.started_pid(paths)
    assert pid is not None and endpoint.server_pid() == pid
    assert paths.pidfile.read_text().strip() == str(pid)

    cli.down(paths)

    assert not endpoint.ping()
    assert not Path(f"/proc/{pid}").exists() or not daemon.is_dockerd(pid)
    assert not paths.record.exists()


def test_reuse_makes_the_engine_pre_existing_so_down_leaves_it(
    second_engine: tuple[Endpoint, daemon.Paths],
) -> None:
    endpoint, paths = second_engine
    up = cli.Up(quiet_reuse=True, endpoint=endpoint, paths=paths)

    assert up.ensure_engine() is False  # answered: reused, not started
    assert up.notes == [], "--quiet-reuse says nothing when it reuses"
    cli.down(paths)

    assert endpoint.ping(), "an engine `up` did not start must survive `down`"


def test_start_failure_shows_the_log(scratch: Path) -> None:
    endpoint = Endpoint(f"unix://{scratch}/docker.sock")
    paths = daemon.Paths(scratch / "state")
    with pytest.raises(daemon.DaemonError, match="dockerd exited") as failure:
        daemon.start(endpoint, paths, ["--no-such-flag"], launcher=NEW_NETNS)
    assert "no-such-flag" in str(failure.value)
    assert not paths.record.exists()


def test_up_twice_is_quiet_the_second_time(docker_host: str, scratch: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": docker_host, "DOCKMOAT_TEST_STATE": str(scratch)}
    argv = [str(REPO / "scripts" / "test-engine"), "up", "--quiet-reuse"]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "" and second.stderr == ""


def test_down_without_up_is_a_no_op(docker_host: str, scratch: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": docker_host, "DOCKMOAT_TEST_STATE": str(scratch)}
    argv = [str(REPO / "scripts" / "test-engine"), "down"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == ""
    assert Endpoint(docker_host).ping()
