"""Mount sources: which of them hand a container the Docker daemon."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

# Sockets that are root on the host for whoever can write to them.
_SOCKET_NAMES = ("docker.sock", "containerd.sock", "podman.sock", "dockershim.sock")
# Directories that contain such a socket; mounting them exposes it just the same.
_SOCKET_PARENTS = frozenset({"/", "/var", "/run", "/var/run", "/run/containerd", "/run/docker"})
# What `dockmoat serve` hands to jobs: its guarded socket and per-job sockets. Mounting
# these is the point; anything else under /run/dockmoat (the root-only control socket,
# the whole jobs directory) is dockmoat's own control plane.
_GUARDED_SOCKETS = ("/run/dockmoat/docker.sock", "/var/run/dockmoat/docker.sock")
_JOB_SOCKET_DIRS = ("/run/dockmoat/jobs", "/var/run/dockmoat/jobs")
# Folders `dockmoat generate kubernetes` hands to runner pods: the guarded socket's
# (a folder, so that a restarted guard's new socket is seen) and the job-open socket's
# (a token opens a job there; the job sockets have unguessable names).
_HANDED_DIRS = (
    "/run/dockmoat/guarded",
    "/var/run/dockmoat/guarded",
    "/run/dockmoat/open",
    "/var/run/dockmoat/open",
)
_DOCKMOAT_DIRS = ("/run/dockmoat", "/var/run/dockmoat")


@dataclass(frozen=True)
class Mount:
    source: str | None  # host path or volume name; None for an anonymous volume
    target: str
    read_only: bool
    line: int

    @property
    def is_bind(self) -> bool:
        return self.source is not None and self.source[:1] in ("/", ".", "~", "$")


def parse_short(spec: str, line: int) -> Mount:
    """`SRC:DST[:MODE]` or `DST` (compose short syntax and `docker run -v`)."""
    parts = _split_colons(spec)
    if len(parts) == 1:
        return Mount(source=None, target=parts[0], read_only=False, line=line)
    mode = parts[2] if len(parts) > 2 else ""
    return Mount(source=parts[0], target=parts[1], read_only="ro" in mode.split(","), line=line)


def _split_colons(spec: str) -> list[str]:
    """Split on ':' outside `${...}` (compose defaults like `${SOCK:-/x}` hold colons)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    i = 0
    while i < len(spec):
        ch = spec[i]
        if spec.startswith("${", i):
            depth += 1
            current.append("${")
            i += 2
            continue
        if ch == "}" and depth:
            depth -= 1
        if ch == ":" and not depth:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def parse_mount_flag(spec: str, line: int) -> Mount:
    """`docker run --mount type=bind,source=...,target=...,readonly`."""
    fields: dict[str, str] = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        fields[key.strip().lower()] = value.strip()
    source = fields.get("source") or fields.get("src")
    target = fields.get("target") or fields.get("destination") or fields.get("dst") or ""
    read_only = "readonly" in fields or "ro" in fields
    return Mount(source=source, target=target, read_only=read_only, line=line)


def _strip_default(source: str) -> str:
    """`${SOCK:-/var/run/docker.sock}` means /var/run/docker.sock unless overridden."""
    if source.startswith("${") and ":-" in source and source.endswith("}"):
        return source[source.index(":-") + 2 : -1]
    return source


def socket_exposure(mount: Mount) -> str | None:
    """How a mount exposes a daemon socket, or None when it does not."""
    if mount.source is None or not mount.is_bind:
        return None
    source = _strip_default(mount.source)
    path = posixpath.normpath(source) if source.startswith("/") else source
    if path in _GUARDED_SOCKETS or path in _HANDED_DIRS:
        return None
    parent, _, base = path.rpartition("/")
    if parent in _JOB_SOCKET_DIRS and base.endswith(".sock"):
        return None
    if path in _DOCKMOAT_DIRS or path in _JOB_SOCKET_DIRS or parent in _DOCKMOAT_DIRS:
        return f"{path} is dockmoat's control plane (control socket or every job's socket)"
    if path.rsplit("/", 1)[-1] in _SOCKET_NAMES:
        return f"the daemon socket {path} is mounted"
    if path in _SOCKET_PARENTS:
        return f"{path} is mounted, which contains the Docker socket"
    return None


DIND_DATA_DIRS = frozenset({"/var/lib/docker", "/home/rootless/.local/share/docker"})
