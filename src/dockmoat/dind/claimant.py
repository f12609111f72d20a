"""Which process is starting (or pooling) a daemon, and whether it provably died.

A claimant is `boot_id/pid-namespace/pid/start-time`: a pid alone is reused,
and a pid seen from another namespace or boot says nothing. `gc` removes a
half-started daemon only when its claimant is *provably* dead; anything it
cannot judge (another machine, another pid namespace) is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _pid_namespace() -> str:
    try:
        return str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        return "?"


def current() -> str:
    pid = os.getpid()
    return "/".join(
        (
            _read("/proc/sys/kernel/random/boot_id"),
            _pid_namespace(),
            str(pid),
            _start_time(pid) or "?",
        )
    )


def parse(claimant: str) -> tuple[str, str, int, str] | None:
    parts = claimant.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2]), parts[3]


def provably_dead(claimant: str | None) -> bool:
    """True only when the claimant ran in this boot and pid namespace and is gone."""
    if not claimant:
        return False
    parsed = parse(claimant)
    if parsed is None:
        return False
    boot, namespace, pid, start = parsed
    if "?" in (boot, namespace, start):
        return False
    if boot != _read("/proc/sys/kernel/random/boot_id") or namespace != _pid_namespace():
        return False
    return _start_time(pid) != start
