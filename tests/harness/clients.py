"""The Docker clients of the test matrix, and where `scripts/install-engine` puts them.

The host's current CLI (/usr/bin/docker, with buildx and Compose v2 as CLI plugins)
is on PATH; the others live under LIBEXEC and are reached only through these names:

- `docker`: the current CLI on PATH (sid's 28.x; trixie's 26.1 where sid's cannot install);
- `docker-20.10`: bookworm's 20.10 CLI (no buildx: the classic builder, or BuildKit with
  DOCKER_BUILDKIT=1);
- `docker-26.1`: trixie's 26.1 CLI with buildx 0.13 and Compose 2.26 as its plugins;
- `docker-compose-v1`: bookworm's docker-compose 1.29 on the system python3.

`docker-26.1` finds its own plugins through `$DOCKER_CONFIG/cli-plugins`, so it sets
DOCKER_CONFIG to its own folder unless the caller set one (then the system plugins,
buildx 0.29 and Compose 2.40, answer instead).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LIBEXEC = Path(os.environ.get("DOCKMOAT_TEST_LIBEXEC", "/usr/local/libexec/dockmoat-test"))
TREES = "trees"


def wrappers(root: Path = LIBEXEC) -> dict[str, str]:
    """File name -> POSIX sh text of each wrapper under root/bin."""
    trees = root / TREES
    config = root / "config" / "docker-26.1"
    v1 = trees / "compose-v1"
    return {
        "docker-20.10": f'#!/bin/sh\nexec {trees}/engine-20.10/usr/bin/docker "$@"\n',
        "docker-26.1": (
            "#!/bin/sh\n"
            f'DOCKER_CONFIG="${{DOCKER_CONFIG:-{config}}}" '
            f'exec {trees}/engine-26.1/usr/bin/docker "$@"\n'
        ),
        "docker-compose-v1": (
            "#!/bin/sh\n"
            f'PYTHONPATH="{v1}/usr/lib/python3/dist-packages" '
            f'exec /usr/bin/python3 {v1}/usr/bin/docker-compose "$@"\n'
        ),
    }


def plugin_links(root: Path = LIBEXEC) -> dict[Path, Path]:
    """The 26.1 CLI's own plugins (buildx 0.13, Compose 2.26), linked into its config."""
    plugins = root / "config" / "docker-26.1" / "cli-plugins"
    tree = root / TREES / "engine-26.1" / "usr" / "libexec" / "docker" / "cli-plugins"
    return {plugins / name: tree / name for name in ("docker-buildx", "docker-compose")}


def client(name: str) -> str | None:
    """The path of a matrix client, or None when it is not installed."""
    if name == "docker":
        return shutil.which("docker", path="/usr/bin:/usr/local/bin")
    path = LIBEXEC / "bin" / name
    return str(path) if path.exists() else None


def all_clients() -> dict[str, str]:
    """Every installed CLI of the matrix, by name (compose v1 apart)."""
    found = {name: client(name) for name in ("docker", "docker-20.10", "docker-26.1")}
    return {name: path for name, path in found.items() if path is not None}
