"""A `dockmoat serve` with job support, for `dockmoat run --mode guarded`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from run_support import DOCKMOAT, REPO, clean_env


@pytest.fixture(scope="module")
def control_socket(docker_host: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="dmtest-run-serve-"))
    control = root / "control.sock"
    log = root / "serve.log"
    argv = [
        *DOCKMOAT,
        "serve",
        "--listen",
        f"unix://{root / 'main.sock'}",
        "--upstream",
        docker_host,
        "--state-db",
        str(root / "state.db"),
        "--control-socket",
        str(control),
        "--jobs-dir",
        str(root / "jobs"),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env()
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if control.exists():
                with socket.socket(socket.AF_UNIX) as probe:
                    try:
                        probe.connect(str(control))
                        break
                    except OSError:
                        pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockmoat serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield control
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
