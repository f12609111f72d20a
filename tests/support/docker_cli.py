"""Running a docker CLI (`docker build`, `run`, `rmi`, ...) against one daemon, with
BuildKit on and no DOCKER_* setting of the caller's environment leaking in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def build(
    cli: str | None, host: str, *args: str, cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`cli *args` in `cwd` with DOCKER_HOST=`host` and DOCKER_BUILDKIT=1, output captured."""
    assert cli is not None, "matrix client missing: run scripts/install-engine"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=host, DOCKER_BUILDKIT="1")
    return subprocess.run(
        [cli, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
        check=False,
    )  # fmt: skip
