"""TEST-ENVIRONMENT WORKAROUND: the CAP_SYS_RESOURCE runtime wrapper, installed only if needed.

Where the kernel's capability bounding set lacks CAP_SYS_RESOURCE, Docker 20.10's
`--privileged` asks runc for it anyway and the container fails with "unable to
apply caps". We detect that with one privileged busybox container and, only
then, register the wrapper (`oci-runtime-wrapper.sh` in front of `oci_runtime_wrapper.py`)
as the engine's default runtime. dockmoat
itself never depends on or mentions this.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.daemon_json import DAEMON_JSON as DAEMON_JSON  # re-exported: cli.py reads it here
from harness.daemon_json import merge_daemon_json, with_runtime

RUNTIME_NAME = "dockmoat-test-runc"
HERE = Path(__file__).resolve().parent
FRONT_SOURCE = HERE / "oci-runtime-wrapper.sh"
EDITOR_SOURCE = HERE / "oci_runtime_wrapper.py"
WRAPPER_DIR = Path("/usr/local/libexec/dockmoat-test")
WRAPPER_PATH = WRAPPER_DIR / "runc-wrapper"
EDITOR_NAME = "drop-cap-sys-resource"
CAPS_ERROR = "unable to apply caps"


class WorkaroundError(Exception):
    """The privileged check or the wrapper installation failed."""


def system_python() -> str:
    """The interpreter for the wrapper's shebang: Debian's own, else this one."""
    debian = Path("/usr/bin/python3")
    return str(debian) if debian.exists() else os.path.realpath(sys.executable)


def wrapper_files(directory: Path, python: str) -> dict[Path, str]:
    """The installed files: the sh front end (the runtime path) and the Python editor."""
    editor = directory / EDITOR_NAME
    body = EDITOR_SOURCE.read_text().split("\n", 1)[1]
    front = FRONT_SOURCE.read_text().replace("@PYTHON@", python).replace("@EDITOR@", str(editor))
    return {editor: f"#!{python} -IS\n{body}", directory / WRAPPER_PATH.name: front}


def install_wrapper(directory: Path = WRAPPER_DIR, python: str | None = None) -> bool:
    """Write the wrapper files (each atomically); True if any changed."""
    changed = False
    directory.mkdir(parents=True, exist_ok=True)
    for dest, text in wrapper_files(directory, python or system_python()).items():
        if dest.exists() and dest.read_text() == text and os.access(dest, os.X_OK):
            continue
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, dest)
        changed = True
    return changed


def merged_daemon_config(current: dict[str, object], wrapper: Path) -> dict[str, object]:
    """`current` plus our runtime, made the default; every other key is kept."""
    merged = with_runtime(current, RUNTIME_NAME, str(wrapper))
    merged["default-runtime"] = RUNTIME_NAME
    return merged


def register(wrapper: Path = WRAPPER_PATH, config: Path = DAEMON_JSON) -> bool:
    """Merge the runtime into daemon.json; True if the file changed."""
    return merge_daemon_json(
        config, lambda current: merged_daemon_config(current, wrapper), WorkaroundError
    )


def privileged_result(docker: str, image: str) -> subprocess.CompletedProcess[str]:
    """Run one privileged busybox container; the caller reads the outcome."""
    return subprocess.run(
        [
            docker,
            "run",
            "--rm",
            "--privileged",
            "--pull",
            "never",
            "--network",
            "none",
            "--label",
            "dockmoat-test=harness",
            image,
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def default_runtime(docker: str) -> str:
    proc = subprocess.run(
        [docker, "info", "--format", "{{.DefaultRuntime}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return proc.stdout.strip()


def wait_default_runtime(docker: str, wanted: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if default_runtime(docker) == wanted:
            return True
        time.sleep(0.3)
    return False
