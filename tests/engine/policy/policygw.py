"""Starting a real `dockmoat serve` (baseline, one allowed workspace) for the policy tests.

In its own module, not conftest.py: `from conftest import ...` picks whichever
conftest module was imported first when several test folders are collected together.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rawdocker import call

from support.processes import terminate

DOCKMOAT = Path(sys.executable).parent / "dockmoat"


@dataclass
class Gateway:
    socket: Path
    workspace: Path
    audit: Path
    log: Path

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        return env


def start_gateway(
    directory: Path, docker_host: str, *args: str, env: dict[str, str] | None = None
) -> tuple[Gateway, subprocess.Popen[bytes]]:
    """Start `dockmoat serve` (one allowed workspace, private tenancy paths) and wait for it."""
    workspace = directory / "ws"
    workspace.mkdir(parents=True)
    gateway = Gateway(
        directory / "gw.sock", workspace, directory / "audit.log", directory / "serve.log"
    )
    argv = [
        str(DOCKMOAT), "serve", "--listen", gateway.host, "--upstream", docker_host,
        "--allow-bind", str(workspace), "--audit-log", str(gateway.audit),
        "--control-socket", str(directory / "control.sock"), "--jobs-dir", str(directory / "jobs"),
        "--state-db", str(directory / "state.db"), *args,
    ]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    process = subprocess.Popen(
        argv, stdout=gateway.log.open("wb"), stderr=subprocess.STDOUT, env={**base, **(env or {})}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockmoat serve exited: {gateway.log.read_text()[-2000:]}")
        if gateway.socket.exists():
            try:
                if call(str(gateway.socket), "GET", "/_ping")[0] == 200:
                    return gateway, process
            except OSError:
                pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"dockmoat serve did not answer: {gateway.log.read_text()[-2000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    terminate(process)
