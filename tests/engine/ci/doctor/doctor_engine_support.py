"""Types and constants shared by doctor's engine tests and their fixtures."""

from __future__ import annotations

import os
import shutil
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


def reachable_runtime(folder: Path) -> list[str]:
    """argv that runs dockmoat from `folder`, for a user who cannot enter the checkout.

    A clone may lie in a folder only root may enter (root's own 0700 home): another
    user then cannot reach its .venv or src/. The installed packages and dockmoat's own
    source are linked (copied across file systems) into `folder`, which the caller made
    traversable, and run without site processing by an interpreter of the same version
    that lives outside the checkout.
    """
    runtime = folder / "runtime"
    if not runtime.exists():
        import dockmoat

        staged = folder / "runtime.partial"
        site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())

        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(site, staged, copy_function=link, dirs_exist_ok=True)
        shutil.copytree(Path(dockmoat.__file__).parent, staged / "dockmoat", dirs_exist_ok=True)
        for path in (staged, *staged.rglob("*")):
            mode = path.stat().st_mode
            path.chmod(mode | (0o555 if path.is_dir() else 0o444))
        staged.rename(runtime)
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    python = str(system) if system.exists() else sys._base_executable
    boot = f"import sys, runpy; sys.path.insert(0, {str(runtime)!r}); "
    boot += "runpy.run_module('dockmoat', run_name='__main__', alter_sys=True)"
    return [python, "-S", "-c", boot]


def dockmoat_cli(
    *args: str,
    env: dict[str, str],
    timeout: float = 120,
    prefix: tuple[str, ...] = (),
    runtime: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real `dockmoat ARGS...` in a subprocess (output captured, never raising).

    With `prefix` (another user, e.g. setpriv), `runtime` names a folder that user may
    enter, where the command is staged (`reachable_runtime`).
    """
    command = (
        reachable_runtime(runtime) if prefix and runtime else [sys.executable, "-m", "dockmoat"]
    )
    return subprocess.run(
        [*prefix, *command, *args],
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
