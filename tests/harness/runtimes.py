"""Extra OCI runtimes the test engine knows, for `dockmoat dind up --runtime NAME`.

`crun` (Debian's, installed by scripts/install-engine) is added to daemon.json's
`runtimes` and the engine is told with SIGHUP: `runtimes` is one of dockerd's
reloadable options, so a running engine learns it without a restart (other people's
containers keep running). Nothing here changes the default runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness.daemon_json import DAEMON_JSON, merge_daemon_json, with_runtime

SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# name in the engine -> the runtime's binary on the host
EXTRA = {"crun": "crun"}


class RuntimeSetupError(Exception):
    """The engine could not be taught a runtime; the message says why."""


def engine_runtimes(docker: str) -> set[str]:
    """The runtimes the engine lists now (`docker info`)."""
    proc = subprocess.run(
        [docker, "info", "--format", "{{json .Runtimes}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeSetupError(f"docker info failed: {proc.stderr.strip()}")
    listed = json.loads(proc.stdout or "{}") or {}
    return set(listed) if isinstance(listed, dict) else set()


def write_runtime(name: str, path: str, config: Path = DAEMON_JSON) -> bool:
    """Merge the runtime into daemon.json (atomically); True if the file changed."""
    return merge_daemon_json(
        config, lambda current: with_runtime(current, name, path), RuntimeSetupError
    )


def ensure_runtimes(
    docker: str, server_pid: int | None, say: Callable[[str], None], config: Path = DAEMON_JSON
) -> None:
    """Make the engine list every installed runtime of EXTRA (reload, never restart).

    A runtime whose binary is not installed is left out with a note (install-engine
    installs crun as root); a reload the engine does not take is an error.
    """
    listed = engine_runtimes(docker)
    for name, binary in EXTRA.items():
        if name in listed:
            continue
        path = shutil.which(binary, path=SEARCH_PATH)
        if path is None:
            say(f"note: {binary} is not installed, so the engine has no runtime {name}")
            continue
        if os.geteuid() != 0:
            say(f"note: only root can add the runtime {name} to {config}")
            continue
        if server_pid is None:
            raise RuntimeSetupError(f"cannot tell the engine's pid to reload it for {name}")
        write_runtime(name, path, config)
        say(f"added the runtime {name} ({path}) to {config}; reloading the engine")
        os.kill(server_pid, signal.SIGHUP)
        deadline = time.monotonic() + 15.0
        while name not in engine_runtimes(docker):
            if time.monotonic() > deadline:
                raise RuntimeSetupError(
                    f"the engine did not take the runtime {name} from {config} on reload"
                )
            time.sleep(0.3)
