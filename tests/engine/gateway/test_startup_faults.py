"""Every start-up fault of `dockmoat serve` is one line naming the thing and the fix,
exit code 2, no traceback, and the file system as it was (issue 21, item 1)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gwserve import DOCKMOAT

Fault = Callable[[Path], list[str]]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _serve(root: Path, *args: str, docker_host: str) -> subprocess.CompletedProcess[str]:
    argv = [
        str(DOCKMOAT), "serve", "--upstream", docker_host, "--log-level", "warning",
        "--bind-pins", "off", "--no-tenancy",
        *args,
    ]  # fmt: skip
    defaults = {
        "--listen": f"unix://{root}/gw/docker.sock",
        "--state-db": str(root / "state" / "state.db"),
        "--control-socket": str(root / "control" / "control.sock"),
        "--jobs-dir": str(root / "jobs"),
    }
    for flag, value in defaults.items():
        if flag not in args:
            argv += [flag, value]
    env = {k: v for k, v in os.environ.items() if k != "DOCKMOAT_DEBUG"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _assert_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("dockmoat: "), output
    for word in words:
        assert word in lines[0], output
    assert result.returncode == 2, output


def test_port_in_use(tmp_path: Path, docker_host: str, busy_port: int) -> None:
    before = _tree(tmp_path)
    result = _serve(tmp_path, "--listen", f"tcp://127.0.0.1:{busy_port}", docker_host=docker_host)
    _assert_one_line(result, f"tcp://127.0.0.1:{busy_port}", "already in use", "another")
    assert _tree(tmp_path) == before  # no state db, no control socket, no folders


def test_port_in_use_after_a_unix_listener_removes_that_socket(
    tmp_path: Path, docker_host: str, busy_port: int
) -> None:
    before = _tree(tmp_path)
    result = _serve(
        tmp_path,
        "--listen", f"unix://{tmp_path}/first/docker.sock",
        "--listen", f"tcp://127.0.0.1:{busy_port}",
        docker_host=docker_host,
    )  # fmt: skip
    _assert_one_line(result, "already in use")
    assert _tree(tmp_path) == before


def _audit_is_a_folder(root: Path) -> list[str]:
    (root / "audit").mkdir()
    return ["--audit-log", str(root / "audit")]


def _audit_folder_is_a_file(root: Path) -> list[str]:
    (root / "logs").write_text("")
    return ["--audit-log", str(root / "logs" / "audit.log")]


def _listen_folder_is_a_file(root: Path) -> list[str]:
    (root / "run").write_text("")
    return ["--listen", f"unix://{root}/run/docker.sock"]


def _control_folder_is_a_file(root: Path) -> list[str]:
    (root / "run").write_text("")
    return ["--control-socket", str(root / "run" / "control.sock")]


def _socket_path_too_long(root: Path) -> list[str]:
    return ["--listen", f"unix://{root}/{'a' * 120}/docker.sock"]


def _control_path_too_long(root: Path) -> list[str]:
    return ["--control-socket", f"{root}/{'c' * 120}.sock"]


def _tls_not_pem(root: Path) -> list[str]:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (root / name).write_text("not a certificate\n")
    return [
        "--listen", "tcp://127.0.0.1:0",
        "--tls-cert", str(root / "cert.pem"), "--tls-key", str(root / "key.pem"),
        "--tls-ca", str(root / "ca.pem"),
    ]  # fmt: skip


def _jobs_dir_is_a_file(root: Path) -> list[str]:
    (root / "jobs").write_text("")
    return ["--jobs-dir", str(root / "jobs")]


def _state_db_is_a_folder(root: Path) -> list[str]:
    (root / "state.db").mkdir()
    return ["--state-db", str(root / "state.db")]


def _listen_path_is_a_file(root: Path) -> list[str]:
    (root / "docker.sock").write_text("")
    return ["--listen", f"unix://{root}/docker.sock"]


def _socket_group_missing(root: Path) -> list[str]:
    return ["--socket-group", "dmtest-no-such-group"]


def _metrics_port_in_use(root: Path) -> list[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    _HELD.append(sock)
    return ["--metrics-listen", f"tcp://127.0.0.1:{sock.getsockname()[1]}"]


_HELD: list[socket.socket] = []


def _extends_contradicts_profile(root: Path) -> list[str]:
    (root / "policy.yaml").write_text("extends: baseline\n")
    return ["--profile", "restricted", "--policy", str(root / "policy.yaml")]


def _limits_inconsistent(root: Path) -> list[str]:
    (root / "policy.yaml").write_text("limits:\n  memory: {default: 8g, max: 2g}\n")
    return ["--policy", str(root / "policy.yaml")]


def _policy_file_missing(root: Path) -> list[str]:
    return ["--policy", str(root / "nope.yaml")]


FAULTS: dict[str, tuple[Fault, tuple[str, ...]]] = {
    "audit log is a folder": (_audit_is_a_folder, ("--audit-log", "is a folder")),
    "audit log's folder is a file": (_audit_folder_is_a_file, ("--audit-log", "not a folder")),
    "listen socket's folder is a file": (_listen_folder_is_a_file, ("--listen", "not a folder")),
    "control socket's folder is a file": (
        _control_folder_is_a_file,
        ("--control-socket", "not a folder"),
    ),
    "unix socket path too long": (_socket_path_too_long, ("--listen", "at most 107 bytes")),
    "control socket path too long": (_control_path_too_long, ("--control-socket", "107")),
    "TLS files not PEM": (_tls_not_pem, ("--tls-cert", "PEM")),
    "--jobs-dir a regular file": (_jobs_dir_is_a_file, ("--jobs-dir", "is a file")),
    "state db a folder": (_state_db_is_a_folder, ("--state-db", "is a folder")),
    "listen path a regular file": (_listen_path_is_a_file, ("not a socket",)),
    "policy file missing": (_policy_file_missing, ("nope.yaml",)),
    "extends contradicts --profile": (
        _extends_contradicts_profile,
        ("extends: baseline contradicts --profile restricted", "--policy-overrides-profile"),
    ),
    "a memory default above its max": (_limits_inconsistent, ("the default 8g",)),
    "socket group missing": (_socket_group_missing, ("--socket-group", "no such group")),
    "metrics port in use": (_metrics_port_in_use, ("--metrics-listen", "already in use")),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_is_one_line_and_leaves_nothing(name: str, tmp_path: Path, docker_host: str) -> None:
    make, words = FAULTS[name]
    args = make(tmp_path)
    before = _tree(tmp_path)
    result = _serve(tmp_path, *args, docker_host=docker_host)
    _assert_one_line(result, *words)
    assert _tree(tmp_path) == before


def test_a_good_start_says_listening_once_everything_listens(
    tmp_path: Path, docker_host: str
) -> None:
    """The 'listening' line comes after the control socket exists; a stop removes it."""
    log = tmp_path / "serve.log"
    control = tmp_path / "control" / "control.sock"
    argv = [
        str(DOCKMOAT), "serve", "--upstream", docker_host, "--bind-pins", "off",
        "--listen", f"unix://{tmp_path}/gw/docker.sock", "--state-db", str(tmp_path / "s.db"),
        "--control-socket", str(control), "--jobs-dir", str(tmp_path / "jobs"),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        import time

        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "listening on" in log.read_text(), log.read_text()
        assert control.is_socket()
        assert (tmp_path / "gw" / "docker.sock").is_socket()
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()
    assert not control.exists(), "the control socket stays after serve stopped"
    assert not (tmp_path / "gw" / "docker.sock").exists()
    assert "Traceback" not in log.read_text()
