"""A real `dockmoat serve` (baseline profile) on a private unix socket, for generate's tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from genguard import DOCKMOAT, Guard, pings

from support.processes import terminate


@pytest.fixture
def guard(tmp_path: Path, docker_host: str) -> Iterator[Guard]:
    # Short directory: unix socket paths are limited to 108 bytes.
    home = tmp_path / "g"
    home.mkdir()
    sock, audit, log = home / "docker.sock", home / "audit.log", home / "serve.log"
    argv = [
        str(DOCKMOAT), "serve", "--listen", f"unix://{sock}", "--upstream", docker_host,
        "--audit-log", str(audit), "--state-db", str(home / "state.db"),
        "--control-socket", str(home / "control.sock"), "--jobs-dir", str(home / "jobs"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 20
        while not pings(sock):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockmoat serve did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield Guard(sock, audit, log)
    finally:
        terminate(process)
