"""`scripts/install-engine`: install what the engine and the tests need, only what is missing.

As root on Debian:

- the apt suites trixie and sid, pinned below the machine's own release (apt
  preferences), so that nothing is upgraded from them unless asked by name;
- a **current engine** (docker.io, docker-cli, docker-buildx, docker-compose v2 and
  containerd from sid, i.e. Engine 28.x; trixie's 26.1 set when sid's cannot be
  installed) when no current engine is installed. bookworm's runc is kept: sid's and
  trixie's need a newer libc than Debian 12 has;
- the **extra clients** of the test matrix, unpacked (`apt-get download` + `dpkg -x`)
  beside it under `/usr/local/libexec/dockmoat-test/`, never on PATH: the 20.10 CLI,
  the 26.1 CLI with buildx 0.13 and Compose 2.26, docker-compose v1 (bookworm's Python
  program, run with the system python3 and its bookworm libraries), and the engine
  trees of 20.10 and 26.1 from which the nested engines of the matrix are built;
- busybox-static (the test images), rootlesskit, slirp4netns and uidmap (the rootless
  DinD image), crun (a second OCI runtime for `dind up --runtime`), golang-go and, unpacked under
  `trees/ryuk-go`, the Go source packages testcontainers' Ryuk is built from
  (`harness.ryuk`), and python3-venv when `python3 -m venv` cannot work.

Silent when nothing is missing. Without root (or off Debian) it prints what to do and
leaves the decision to `scripts/test-engine up`. See docs/testing.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import frontend, ryuk
from harness.endpoint import Endpoint

PREFIX = "install-engine: "
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LIBEXEC = Path(os.environ.get("DOCKMOAT_TEST_LIBEXEC", "/usr/local/libexec/dockmoat-test"))
SOURCES = Path("/etc/apt/sources.list.d/dockmoat-test-suites.sources")
PREFERENCES = Path("/etc/apt/preferences.d/dockmoat-test-suites")
SOURCES_TEXT = (
    "# Written by dockmoat's scripts/install-engine (docs/testing.md): the newer Debian\n"
    "# suites the test engines and clients come from, pinned below this release.\n"
    "Types: deb\n"
    "URIs: http://deb.debian.org/debian\n"
    "Suites: trixie sid\n"
    "Components: main\n"
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
)
PREFERENCES_TEXT = (
    "# Written by dockmoat's scripts/install-engine: take nothing from these suites\n"
    "# unless it is asked for by name (pkg/trixie, pkg/sid).\n"
    "Package: *\nPin: release n=trixie\nPin-Priority: 100\n\n"
    "Package: *\nPin: release n=sid\nPin-Priority: 50\n"
)

# The oldest engine the suite calls current (docs/testing.md).
CURRENT_MAJOR = 26
# (suite, packages): sid first (what users run), trixie when sid's set cannot be installed.
# runc, iptables and busybox-static come from the machine's own release.
ENGINE_SETS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (
        suite,
        tuple(
            f"{name}/{suite}"
            for name in ("docker.io", "docker-cli", "docker-buildx", "docker-compose", "containerd")
        )
        + (("tini-static/sid",) if suite == "sid" else ("tini/bookworm",))
        + ("runc", "iptables", "busybox-static"),
    )
    for suite in ("sid", "trixie")
)
# busybox-static: the test images; golang-go: the compiler that builds Ryuk (harness.ryuk);
# golang-1.26-go from sid (with its -src, nothing else): the test frontend's (harness.frontend);
# rootlesskit, slirp4netns, uidmap, iproute2: the rootless DinD image (harness.images); crun: the
# second OCI runtime of `dind up --runtime` (harness.runtimes).
TEST_PACKAGES = (
    "busybox-static",
    ryuk.GO_COMPILER_PACKAGE,
    f"{frontend.GO_COMPILER_PACKAGE}/{frontend.GO_SUITE}",
    "rootlesskit",
    "slirp4netns",
    "uidmap",
    "iproute2",
    "crun",
)
# docker-compose v1 runs on these bookworm libraries with the system python3.
COMPOSE_V1_DEPENDS = (
    "python3-distro",
    "python3-docker",
    "python3-dockerpty",
    "python3-docopt",
    "python3-dotenv",
    "python3-jsonschema",
    "python3-requests",
    "python3-texttable",
    "python3-websocket",
    "python3-yaml",
    "python3-distutils",
)


@dataclass(frozen=True)
class Unpacked:
    """A package of another suite, unpacked under LIBEXEC/trees/<tree>/."""

    tree: str
    package: str  # name/suite or name=version, as `apt-get download` takes it


# What the matrix needs beside the host engine. Trees are shared by name: the 20.10
# engine tree holds dockerd, its CLI and containerd 1.6 for the nested 20.10 engine.
UNPACKED = (
    Unpacked("engine-20.10", "docker.io/bookworm"),
    Unpacked("engine-20.10", "containerd/bookworm"),
    Unpacked("engine-26.1", "docker.io/trixie"),
    Unpacked("engine-26.1", "docker-cli/trixie"),
    Unpacked("engine-26.1", "docker-buildx/trixie"),
    Unpacked("engine-26.1", "docker-compose/trixie"),
    Unpacked("engine-26.1", "containerd/trixie"),
    Unpacked("compose-v1", "docker-compose/bookworm"),
    # The Go sources Ryuk is built from (harness.ryuk): source only, nothing installed.
    *(Unpacked(ryuk.GO_TREE, f"{name}/bookworm") for name in ryuk.GO_PACKAGES),
    # BuildKit's Go sources the `# syntax=` test frontend is built from (harness.frontend).
    *(Unpacked(frontend.GO_TREE, f"{name}/{frontend.GO_SUITE}") for name in frontend.GO_PACKAGES),
)


def installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and proc.stdout.strip() == "install ok installed"


def engine_major(dockerd: str | None) -> int | None:
    """The major version of the dockerd binary at that path (None: absent or unreadable)."""
    if dockerd is None:
        return None
    proc = subprocess.run([dockerd, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"version (\d+)\.", proc.stdout)
    return int(found.group(1)) if found else None


def wanted_packages(venv_works: bool, is_installed: Callable[[str], bool]) -> list[str]:
    """The plain packages (from the machine's own release) to install, in a stable order."""
    candidates = list(TEST_PACKAGES)
    candidates += COMPOSE_V1_DEPENDS
    if not venv_works:
        candidates.append("python3-venv")
    unique = list(dict.fromkeys(candidates))
    # `name/suite` (another suite's package, asked for by name): installed is by name.
    return [p for p in unique if not is_installed(p.split("/", 1)[0])]


def needs_engine(engine_answers: bool, major: int | None) -> bool:
    """Install the current engine unless one is installed, or an engine answers already
    (a DOCKER_HOST the user chose, whatever its version)."""
    if engine_answers and major is None:
        return False
    return major is None or major < CURRENT_MAJOR


def _run(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": SBIN_PATH}
    return subprocess.run(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def _must(argv: Sequence[str], cwd: Path | None = None) -> str:
    proc = _run(argv, cwd)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise SystemExit(f"{PREFIX}`{' '.join(argv)}` failed:\n{tail}")
    return proc.stdout


def ensure_suites() -> bool:
    """Write the suites and their pins; True when something changed (apt-get update due)."""
    changed = False
    for path, text in ((SOURCES, SOURCES_TEXT), (PREFERENCES, PREFERENCES_TEXT)):
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed = True
    return changed


def install_engine() -> str:
    """Install the first engine set apt can resolve; the suite it came from."""
    failures = []
    for suite, packages in ENGINE_SETS:
        base = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
        if _run([*base, "-s", *packages]).returncode != 0:
            failures.append(suite)
            continue
        _must([*base, *packages])
        return suite
    raise SystemExit(f"{PREFIX}no current engine set can be installed (tried {failures})")


def unpack(items: Sequence[Unpacked], root: Path = LIBEXEC) -> list[str]:
    """`apt-get download` + `dpkg -x` each package not yet unpacked; what was unpacked."""
    stamp_path = root / "unpacked.json"
    try:
        stamp: dict[str, str] = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    done = []
    for item in items:
        key = f"{item.tree}:{item.package}"
        if key in stamp and (root / "trees" / item.tree).is_dir():
            continue
        with tempfile.TemporaryDirectory() as scratch:
            _must(["apt-get", "download", item.package], cwd=Path(scratch))
            (deb,) = Path(scratch).glob("*.deb")
            (root / "trees" / item.tree).mkdir(parents=True, exist_ok=True)
            _must(["dpkg-deb", "-x", str(deb), str(root / "trees" / item.tree)])
            stamp[key] = deb.name
            done.append(deb.name)
        stamp_path.write_text(json.dumps(stamp, indent=1, sort_keys=True))
    return done


def write_wrappers(root: Path = LIBEXEC) -> None:
    """The matrix clients as commands under LIBEXEC/bin (harness.clients names them)."""
    from harness import clients  # the one place that knows the layout

    for name, text in clients.wrappers(root).items():
        path = root / "bin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o755)
    for link, target in clients.plugin_links(root).items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() or os.readlink(link) != str(target):
            link.unlink(missing_ok=True)
            link.symlink_to(target)


def main() -> int:
    engine_answers = Endpoint.from_env().ping()
    dockerd = shutil.which("dockerd", path=SBIN_PATH)
    major = engine_major(dockerd)
    debian = Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None
    if not debian:
        if not engine_answers and dockerd is None:
            print(
                f"{PREFIX}no Docker engine answers and dockerd is missing; this script installs "
                "one only on Debian: install Docker, start it, or set DOCKER_HOST",
                file=sys.stderr,
            )
        return 0
    venv_works = importlib.util.find_spec("ensurepip") is not None
    missing = wanted_packages(venv_works, installed)
    engine = needs_engine(engine_answers, major)
    clients_missing = not (LIBEXEC / "unpacked.json").exists() or any(
        f"{u.tree}:{u.package}" not in (LIBEXEC / "unpacked.json").read_text() for u in UNPACKED
    )
    if not missing and not engine and not clients_missing:
        return 0
    if os.geteuid() != 0:
        print(
            f"{PREFIX}missing: {' '.join(missing) or '-'}"
            f"{'; a current engine (docker.io from sid or trixie)' if engine else ''}"
            f"{'; the matrix clients' if clients_missing else ''}: run `make setup` as root",
            file=sys.stderr,
        )
        return 0  # `scripts/test-engine up` fails later, clearly, if the engine is what lacks
    if ensure_suites() or engine or missing or clients_missing:
        _must(["apt-get", "update", "-q"])
    if missing:
        print(f"{PREFIX}installing {' '.join(missing)}", flush=True)
        _must(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing])
    if engine:
        print(f"{PREFIX}installing the current engine", flush=True)
        suite = install_engine()
        major = engine_major(shutil.which("dockerd", path=SBIN_PATH))
        print(f"{PREFIX}engine {major}.x from {suite}", flush=True)
    if clients_missing:
        done = unpack(UNPACKED)
        if done:
            print(f"{PREFIX}unpacked for the matrix and Ryuk: {' '.join(done)}", flush=True)
    write_wrappers()
    return 0
