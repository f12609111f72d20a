"""Generated configurations checked by real tools on this machine.

- docker-compose (v1, Debian's) validates both compose files against its schema.
- The bounded daemon wait every generated job runs, executed by a real shell
  with the real docker CLI: against the engine it passes, against no daemon it
  gives up after its bound with a clear message.
- The guarded compose file's health check, run against a real Docker API socket.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dockmoat.ci.audit.yamlsrc import load
from dockmoat.ci.generate import Mode, Options, System, generate
from dockmoat.ci.generate.wait import wait_lines

pytestmark = pytest.mark.engine

COMPOSE_V1 = shutil.which("docker-compose")
DOCKER = "/usr/local/bin/docker"


@pytest.mark.parametrize("mode", list(Mode))
def test_docker_compose_accepts_the_file(mode: Mode, tmp_path: Path) -> None:
    assert COMPOSE_V1 is not None, "docker-compose is part of the test machine"
    path = tmp_path / "compose.yml"
    path.write_text(generate(Options(system=System.COMPOSE, mode=mode)))
    proc = subprocess.run(
        [COMPOSE_V1, "-f", str(path), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    resolved = load(proc.stdout)
    runner = resolved["services"]["runner"]
    assert runner["depends_on"][next(iter(runner["depends_on"]))]["condition"] == "service_healthy"
    # compose interpolated ${TAG:-dev} and kept the shell's own variables.
    assert runner["environment"]["IMAGE"].endswith(":dev")
    assert "$IMAGE" in runner["command"][2].replace("$$", "$")


def _wait_script(seconds: int) -> str:
    return "\n".join(wait_lines(seconds)) + "\necho ready\n"


def test_wait_passes_when_the_daemon_answers(docker_host: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["sh", "-c", _wait_script(10)],
        env={
            "PATH": f"{Path(DOCKER).parent}:/usr/bin:/bin",
            "DOCKER_HOST": docker_host,
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "ready"), proc.stderr


def test_wait_gives_up_after_its_bound(tmp_path: Path) -> None:
    missing = f"unix:///tmp/dockmoat-no-daemon-{secrets.token_hex(4)}.sock"
    started = time.monotonic()
    proc = subprocess.run(
        ["sh", "-c", _wait_script(3)],
        env={
            "PATH": f"{Path(DOCKER).parent}:/usr/bin:/bin",
            "DOCKER_HOST": missing,
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert "ready" not in proc.stdout
    assert f"Docker daemon at {missing} not ready after 3s" in proc.stderr
    assert elapsed < 30  # bounded: it did not wait for the CI timeout


def _healthcheck_code(socket_path: str) -> str:
    doc = load(generate(Options(system=System.COMPOSE, mode=Mode.GUARDED)))
    test = list(doc["services"]["dockmoat"]["healthcheck"]["test"])
    assert test[:3] == ["CMD", "python3", "-c"]
    return str(test[3]).replace("/run/dockmoat/guarded/docker.sock", socket_path)


def test_guarded_healthcheck_against_a_real_api_socket(docker_host: str) -> None:
    if not docker_host.startswith("unix://"):
        pytest.skip("the engine under test is not on a unix socket")
    ok = subprocess.run(
        [sys.executable, "-c", _healthcheck_code(docker_host.removeprefix("unix://"))],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    missing = f"/tmp/dockmoat-no-socket-{secrets.token_hex(4)}.sock"
    bad = subprocess.run(
        [sys.executable, "-c", _healthcheck_code(missing)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode != 0
