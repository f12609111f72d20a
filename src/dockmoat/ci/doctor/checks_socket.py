"""Pure check of a unix socket's permissions against the calling user, with the exact fix."""

from __future__ import annotations

import stat

from dockmoat.ci.doctor.facts import CallerFacts, SocketFacts
from dockmoat.ci.doctor.model import Finding, fail, ok, warn

PERMISSIONS = "socket.permissions"


def can_connect(sock: SocketFacts, caller: CallerFacts) -> bool:
    """connect(2) on a unix socket needs write permission on the socket file."""
    if caller.uid == 0:
        return True
    if caller.uid == sock.uid:
        return bool(sock.mode & stat.S_IWUSR)
    if sock.gid in caller.gids:
        return bool(sock.mode & stat.S_IWGRP)
    return bool(sock.mode & stat.S_IWOTH)


def _describe(sock: SocketFacts) -> str:
    owner = sock.owner_name or str(sock.uid)
    group = sock.group_name or str(sock.gid)
    return f"{sock.path} is {stat.filemode(sock.mode)} {owner}:{group}"


def check_socket(sock: SocketFacts, caller: CallerFacts) -> Finding | None:
    """None when there is no file to judge (reachability already says so)."""
    if not sock.exists:
        return None
    if sock.blocked_dir is not None and caller.uid != 0:
        return fail(
            PERMISSIONS,
            f"{sock.path}: {caller.user} may not enter the folder {sock.blocked_dir}",
            f"`sudo chmod o+x {sock.blocked_dir}` (or give its group to {caller.user}), "
            "or serve the socket from a folder the user can reach",
        )
    described = _describe(sock)
    if not sock.is_socket:
        return fail(
            PERMISSIONS,
            f"{sock.path} exists but is not a socket ({stat.filemode(sock.mode)})",
            f"a bind mount of a missing socket makes a folder: remove {sock.path} and mount the "
            "daemon's socket once it runs",
        )
    if not can_connect(sock, caller):
        return fail(
            PERMISSIONS,
            f"{described}; {caller.user} (uid {caller.uid}) may not connect",
            _fix(sock, caller),
        )
    if sock.mode & stat.S_IWOTH:
        return warn(
            PERMISSIONS,
            f"{described}: every local user can drive the daemon, which is root on this host",
            f"`sudo chmod o-rw {sock.path}` and grant access through its group instead",
        )
    if caller.uid == 0:
        why = "you are root"
    elif caller.uid == sock.uid:
        why = "you own it"
    else:
        why = f"you are in group {sock.group_name or sock.gid}"
    return ok(PERMISSIONS, f"{described}; {why}")


def _fix(sock: SocketFacts, caller: CallerFacts) -> str:
    group_add = f"--group-add {sock.gid}  (i.e. --group-add $(stat -c %g {sock.path}))"
    fixes: list[str] = []
    if caller.uid == sock.uid:
        return f"`chmod u+rw {sock.path}` (you own it but have no write permission)"
    if not sock.mode & stat.S_IWGRP:
        fixes.append(f"`sudo chmod g+rw {sock.path}` (the group has no write permission)")
    if sock.gid in caller.gids:
        return "; ".join(fixes)
    if caller.in_container:
        fixes.append(f"start this container with {group_add}")
        return "; ".join(fixes)
    if sock.group_name is None:
        fixes.append(
            f"the socket's group {sock.gid} has no name here: `sudo chgrp docker {sock.path}` "
            f"on the daemon's host, or in a container {group_add}"
        )
    elif caller.user in sock.group_members:
        fixes.append(
            f"{caller.user} is in group {sock.group_name} but this session started before: "
            f"log out and in again, or run `newgrp {sock.group_name}`"
        )
    else:
        fixes.append(
            f"`sudo usermod -aG {sock.group_name} {caller.user}` then log out and in "
            f"(or `newgrp {sock.group_name}`); in a container: {group_add}"
        )
    return "; ".join(fixes)
