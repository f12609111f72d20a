"""Where a bind mount really comes from on the host, and whether that is allowed.

The only I/O of the policy: `os.path.realpath` reads the host's filesystem to
follow symlinks and `..`, so that a link planted in an allowed workspace cannot
reach `/`. Paths are compared on whole components (/work/ws2 is not in /work/ws).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: Paths whose exposure hands out the daemon (or dockmoat's own control plane).
#: A bind of any of them, of anything inside them, or of any parent folder is refused.
DAEMON_PATHS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/docker",
    "/run/docker",
    "/run/containerd",
    "/var/run/containerd",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/run/dockmoat",
)


def resolve(path: str) -> str:
    """The host path a bind source names, symlinks and `..` resolved."""
    return os.path.realpath(path)


def within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or inside it, on whole path components."""
    if folder == "/":
        return path.startswith("/")
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def protected_paths(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The daemon paths in both spellings: as written and with symlinks resolved."""
    seen: dict[str, None] = {}
    for path in (*DAEMON_PATHS, *extra):
        seen[os.path.normpath(path)] = None
        seen[resolve(path)] = None
    return tuple(seen)


def bind_problem(source: str, allow_bind: Iterable[str], protected: Iterable[str]) -> str | None:
    """Why a bind from host path `source` is refused, or None when it is allowed."""
    resolved = resolve(source)
    shown = source if resolved == source else f"{source} (resolved: {resolved})"
    for path in protected:
        if within(resolved, path) or within(path, resolved):
            return f"a bind mount of {shown}, which exposes the daemon ({path})"
    if not any(within(resolved, folder) for folder in allow_bind):
        return f"a bind mount of host path {shown}, outside the allowed folders"
    return None
