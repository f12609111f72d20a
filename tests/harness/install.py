"""`scripts/install-engine`: install what the engine and the tests need, only what is missing.

As root on Debian: the engine packages (docker.io, docker-compose, busybox-static,
iptables) when no engine answers and dockerd is missing; the test packages
(busybox-static, docker-compose) whenever they are missing; python3-venv when
`python3 -m venv` cannot work. Silent when nothing is missing. Without root (or
off Debian) it prints what to do and leaves the decision to `scripts/test-engine up`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.endpoint import Endpoint

PREFIX = "install-engine: "
ENGINE_PACKAGES = ("docker.io", "docker-compose", "busybox-static", "iptables")
TEST_PACKAGES = ("busybox-static", "docker-compose")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and proc.stdout.strip() == "install ok installed"


def wanted_packages(
    engine_answers: bool,
    dockerd_present: bool,
    venv_works: bool,
    is_installed: Callable[[str], bool],
) -> list[str]:
    """The packages to install, in a stable order, given what the machine has."""
    candidates: list[str] = []
    if not engine_answers and not dockerd_present:
        candidates += ENGINE_PACKAGES
    candidates += TEST_PACKAGES
    if not venv_works:
        candidates.append("python3-venv")
    unique = list(dict.fromkeys(candidates))
    return [p for p in unique if not is_installed(p)]


def apt_install(packages: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": SBIN_PATH}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
    ):
        proc = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise SystemExit(f"{PREFIX}`{' '.join(argv)}` failed:\n{tail}")


def main() -> int:
    engine_answers = Endpoint.from_env().ping()
    dockerd_present = shutil.which("dockerd", path=SBIN_PATH) is not None
    debian = Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None
    if not debian:
        if not engine_answers and not dockerd_present:
            print(
                f"{PREFIX}no Docker engine answers and dockerd is missing; this script installs "
                "one only on Debian: install Docker, start it, or set DOCKER_HOST",
                file=sys.stderr,
            )
        return 0
    venv_works = importlib.util.find_spec("ensurepip") is not None
    missing = wanted_packages(engine_answers, dockerd_present, venv_works, installed)
    if not missing:
        return 0
    if os.geteuid() != 0:
        print(
            f"{PREFIX}missing: {' '.join(missing)}; run as root: "
            f"apt-get install --no-install-recommends {' '.join(missing)}",
            file=sys.stderr,
        )
        return 0  # `scripts/test-engine up` fails later, clearly, if the engine is what lacks
    print(f"{PREFIX}installing {' '.join(missing)}", flush=True)
    apt_install(missing)
    return 0
