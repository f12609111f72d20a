"""Starting and stopping a background dockerd for the tests, and remembering who started it.

`up` writes `started.json` only when it started the daemon itself; `down` stops
the daemon only when that record exists and still names a live dockerd. An `up`
that finds a running engine clears the record: from then on that engine counts
as pre-existing and no later `down` stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.endpoint import Endpoint

DEFAULT_STATE_DIR = "/run/dockmoat-test"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class DaemonError(Exception):
    """The engine could not be started, reloaded or stopped; the message says why."""


@dataclass(frozen=True)
class Paths:
    """Pid file, log and start record, under $DOCKMOAT_TEST_STATE or /run/dockmoat-test."""

    state: Path = field(
        default_factory=lambda: Path(os.environ.get("DOCKMOAT_TEST_STATE") or DEFAULT_STATE_DIR)
    )

    @property
    def pidfile(self) -> Path:
        return self.state / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.state / "dockerd.log"

    @property
    def record(self) -> Path:
        return self.state / "started.json"

    @property
    def lock(self) -> Path:
        return self.state / "lock"


@contextlib.contextmanager
def exclusive(paths: Paths) -> Iterator[None]:
    """Serialise concurrent `up`/`down` runs (several `make test` at once) on one lock file."""
    try:
        paths.state.mkdir(parents=True, exist_ok=True)
        lock = paths.lock.open("a")
    except PermissionError:
        yield  # not root: nothing this run could start or stop anyway
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# Lines that say why dockerd stopped, wherever they are: dockerd 28 prints an unknown
# flag's error first and then its whole usage (200 lines), so a tail alone misses it.
_REASON = re.compile(r"^Status: |level=(error|fatal)|failed to start|unknown (flag|shorthand)")


def log_tail(path: Path, lines: int = 30, since: int = 0) -> str:
    """The log from byte `since` on (this start's part): its lines that give a reason
    for failing (at most 10), then its last `lines` lines."""
    try:
        with path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    tail = text[-lines:]
    reasons = [line for line in text[: len(text) - len(tail)] if _REASON.search(line)][:10]
    return "\n".join([*reasons, "...", *tail] if reasons else tail)


def is_dockerd(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and os.path.basename(cmdline[0]) == b"dockerd"


def start(
    endpoint: Endpoint,
    paths: Paths,
    extra_args: Sequence[str] = (),
    launcher: Sequence[str] = (),
) -> int:
    """Start dockerd in the background, wait for `/_ping`, record it; returns its pid.

    `launcher` is a command that execs its arguments (e.g. `unshare --net`), so
    the pid is still dockerd's.
    """
    if os.geteuid() != 0:
        socket_file = endpoint.unix_path
        if socket_file and Path(socket_file).exists() and not os.access(socket_file, os.W_OK):
            raise DaemonError(
                f"{socket_file} exists but you may not use it: join its group "
                "(usually `docker`) or run as root"
            )
        raise DaemonError(
            f"no engine answers at {endpoint.url} and only root can start one: "
            "run `sudo scripts/test-engine up`, or set DOCKER_HOST to a running engine"
        )
    socket_path = endpoint.unix_path
    if socket_path is None:
        raise DaemonError(
            f"no engine answers at {endpoint.url}; start it (only unix:// is started here)"
        )
    paths.state.mkdir(parents=True, exist_ok=True)
    argv = [*launcher, "dockerd", "--pidfile", str(paths.pidfile)]
    if endpoint.url != "unix:///var/run/docker.sock":
        argv += ["--host", endpoint.url]
    argv += extra_args
    env = dict(os.environ)
    # dockerd finds containerd, runc and iptables on PATH; sbin is not always there.
    env["PATH"] = (
        env.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    with paths.log.open("ab") as log:
        since = log.tell()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the make/CI step that started it
            env=env,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if endpoint.ping(timeout=1.0):
            paths.record.write_text(json.dumps({"pid": proc.pid, "host": endpoint.url}))
            return proc.pid
        if proc.poll() is not None:
            raise DaemonError(
                f"dockerd exited with status {proc.returncode}; log {paths.log}:\n"
                f"{log_tail(paths.log, since=since)}"
            )
        time.sleep(0.2)
    proc.terminate()
    raise DaemonError(
        f"dockerd did not answer /_ping within {START_TIMEOUT:.0f}s; log {paths.log}:\n"
        f"{log_tail(paths.log, since=since)}"
    )


def started_pid(paths: Paths) -> int | None:
    """The pid of a dockerd that `up` started and that still runs, else None."""
    try:
        pid = int(json.loads(paths.record.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if is_dockerd(pid) else None


def forget(paths: Paths) -> None:
    paths.record.unlink(missing_ok=True)


def stop(pid: int, paths: Paths) -> None:
    """SIGTERM the daemon and wait for it (and so its containerd) to exit."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        forget(paths)
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not is_dockerd(pid):
            forget(paths)
            return
        time.sleep(0.2)
    raise DaemonError(f"dockerd (pid {pid}) did not exit within {STOP_TIMEOUT:.0f}s")


def reload(pid: int) -> None:
    """Make dockerd re-read daemon.json (runtimes and default-runtime are reloadable)."""
    os.kill(pid, signal.SIGHUP)
