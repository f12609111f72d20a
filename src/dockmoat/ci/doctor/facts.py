"""What `gather` observed, as plain values for the pure checks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConnectError:
    """A connection attempt that failed; `kind` classifies it for the fix.

    kinds: missing, refused, permission, timeout, resolve, os, tls-verify,
    tls-plain-server, tls-rejected, tls, unsupported.
    """

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class RawResponse:
    """The bytes a daemon answered to `GET /_ping` (head and body, bounded)."""

    data: bytes


PingResult = ConnectError | RawResponse


@dataclass(frozen=True, slots=True)
class SocketFacts:
    path: str
    exists: bool
    is_socket: bool = False
    mode: int = 0
    uid: int = 0
    gid: int = 0
    owner_name: str | None = None
    group_name: str | None = None
    # Members listed for the socket's group in the group database.
    group_members: tuple[str, ...] = ()
    # The first folder on the way to the socket that the caller may not search (x bit).
    blocked_dir: str | None = None


@dataclass(frozen=True, slots=True)
class CallerFacts:
    uid: int
    user: str
    gids: frozenset[int]
    # True when this process runs inside a container (the fix differs).
    in_container: bool = False


@dataclass(frozen=True, slots=True)
class FileRead:
    """A file's bytes, or why it could not be read."""

    path: str
    data: bytes | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DindFacts:
    """A DinD container as the outer engine and `docker exec` describe it."""

    name: str
    found: bool
    running: bool = False
    status: str = ""
    exit_code: int = 0
    privileged: bool = False
    runtime: str = ""
    # Destinations of the container's mounts (volumes and binds).
    mount_points: tuple[str, ...] = ()
    logs: str = ""
    # Output of listing /sys/class/net/*/mtu as "IFACE MTU" lines, and /proc/net/route.
    net_mtus: str | None = None
    routes: str | None = None
    # The nested daemon's storage driver when it could be asked.
    nested_driver: str | None = None
    # The MTU the nested daemon gives its bridge network (--mtu), when it could be asked.
    nested_bridge_mtu: int | None = None
    exec_error: str | None = None
