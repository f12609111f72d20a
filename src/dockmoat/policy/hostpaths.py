"""Where a bind mount really comes from on the host, and whether that is allowed.

The only I/O of the policy: the host's filesystem is read to follow symlinks,
so that a link planted in an allowed workspace cannot reach `/`. The source is
first cleaned lexically, as dockerd does (Go's `path.Clean`) before the kernel
sees it: `WS/link/..` is `WS` for dockerd, whatever `link` points at. Paths are
compared on whole components (/work/ws2 is not in /work/ws).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

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


#: The kernel's limit on symlinks followed in one lookup (ELOOP past it).
MAX_SYMLINKS = 40


def resolve(path: str) -> str:
    """The host path a bind source names: cleaned as dockerd cleans it, then symlinks
    followed as the kernel follows them.

    Unlike `os.path.realpath`, only a missing component is tolerated (dockerd creates
    missing bind folders); any other error (EACCES, ENAMETOOLONG, ELOOP...) raises
    OSError, because a link the guard cannot read may still lead the daemon out.
    """
    # Lexical, like Go's path.Clean (Path.resolve would follow links before "..").
    cleaned = os.path.abspath(path)  # noqa: PTH100
    pending = [part for part in reversed(cleaned.split("/")) if part]
    resolved = ""  # "" is "/"
    links = 0
    while pending:
        name = pending.pop()
        if name in (".", ".."):
            if name == "..":
                resolved = resolved.rsplit("/", 1)[0]
            continue
        candidate = f"{resolved}/{name}"
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            resolved = candidate
            continue
        if not stat.S_ISLNK(mode):
            resolved = candidate
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(f"too many levels of symbolic links in {path}")
        target = str(Path(candidate).readlink())
        if target.startswith("/"):
            resolved = ""
        pending.extend(part for part in reversed(target.split("/")) if part)
    return resolved or "/"


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


def bind_problem(
    source: str, allow_bind: Iterable[str], protected: Iterable[str], own_socket: str | None = None
) -> str | None:
    """Why a bind from host path `source` is refused, or None when it is allowed.
    `own_socket`: a job's own guarded socket, allowed exactly (nothing under it)."""
    try:
        resolved = resolve(source)
    except OSError as error:  # fail closed: what we cannot follow, dockerd might
        return f"a bind mount of {source}, whose path cannot be resolved ({error})"
    if own_socket is not None and resolved == resolve(own_socket):
        return None
    shown = source if resolved == source else f"{source} (resolved: {resolved})"
    for path in protected:
        if within(resolved, path) or within(path, resolved):
            return f"a bind mount of {shown}, which exposes the daemon ({path})"
    if not any(within(resolved, folder) for folder in allow_bind):
        return f"a bind mount of host path {shown}, outside the allowed folders"
    return None


def missing_mount_flags(folder: Path) -> tuple[str, ...]:
    """The protective mount flags (`nosuid`, `nodev`) the folder's filesystem lacks.

    A container that runs as root can leave a setuid-root binary or a device node in
    a folder it may bind; on a filesystem without these flags, any host user who can
    reach the folder then becomes root. The policy cannot prevent the write, so the
    operator is told at start-up.
    """
    try:
        flags = os.statvfs(folder).f_flag
    except OSError:
        return ()  # a folder that does not exist yet: nothing is on it to warn about
    return tuple(
        name for name, bit in (("nosuid", os.ST_NOSUID), ("nodev", os.ST_NODEV)) if not flags & bit
    )


def mount_flags_warning(folder: Path) -> str | None:
    """What to tell the operator about a bindable folder lacking those flags, or None.

    Worded to follow "<what> <folder> is ": serve says it of --allow-bind folders,
    tenancy of job workspaces.
    """
    missing = missing_mount_flags(folder)
    if not missing:
        return None
    return (
        f"on a filesystem without {','.join(missing)}: a root container can leave setuid "
        "binaries or device nodes there for host users; mount it with nosuid,nodev"
    )
