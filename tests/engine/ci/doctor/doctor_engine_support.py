"""Types and constants shared by doctor's engine tests and their fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support.pki import Issued

LABEL = {"dockmoat.test": "ci-doctor"}
SOCKET_GID = 4242
# Far below any real uplink, so the nested bridge is never the MTU problem here.
NESTED_MTU = 1280


def clean_env() -> dict[str, str]:
    """This process's environment without DOCKER_*, which would steer the CLI under test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}


def dockmoat_cli(
    *args: str, env: dict[str, str], timeout: float = 120, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The real `dockmoat ARGS...` in a subprocess (output captured, never raising)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "dockmoat", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class TlsDaemon:
    name: str
    port: int
    ca: Issued
    socket_path: Path


@dataclass
class DoctorRun:
    code: int
    findings: list[dict[str, str | None]]
    stderr: str

    def by_check(self, check: str) -> list[dict[str, str | None]]:
        return [f for f in self.findings if f["check"] == check]

    def status(self, check: str) -> str | None:
        found = self.by_check(check)
        return found[0]["status"] if found else None
