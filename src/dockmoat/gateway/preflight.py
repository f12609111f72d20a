"""Start-up checks of every path `dockmoat serve` will use, and undoing a failed start.

`check_paths` runs before anything is created: each fault it finds is a ConfigError
naming the flag, the path and the fix, so a start that would fail half-way (a
traceback, a state database or a socket left behind) fails in one line instead.
`Footprint` remembers which of those paths (and which of their folders) did not
exist before the start, so that a start failing anyway (a port in use is only
known when binding) removes exactly what it made.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import ssl
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dockmoat.errors import ConfigError

if TYPE_CHECKING:
    from dockmoat.gateway.config import ServeSettings

# sockaddr_un.sun_path is 108 bytes on Linux, with the terminating NUL.
MAX_SOCKET_PATH = 107
# Job sockets are <jobs-dir>/<job>.sock: a folder where even a one-letter job's
# socket would be too long is refused at start (longer names are refused at open).
_SHORTEST_JOB_SOCKET = len("j.sock")


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path("/")


def _folder_ok(flag: str, path: Path, folder: Path) -> None:
    """The folder `path` lives in exists or can be made: no file in the way, writable."""
    existing = _first_existing(folder)
    if not existing.is_dir():
        raise ConfigError(
            f"{flag} {path}: {existing} is a file, not a folder; "
            "remove it or choose a path in another folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "create files in" if existing == folder else f"create {folder} in"
        raise ConfigError(
            f"{flag} {path}: cannot {what} {existing} (permission denied); "
            "run as its owner or choose another path"
        )


def check_file(flag: str, path: Path) -> None:
    """A file serve creates or appends to (audit log, state database)."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'x'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path}: not writable; fix its owner or mode")
    _folder_ok(flag, path, path.parent)


def check_socket(flag: str, path: Path) -> None:
    """A unix socket serve creates (a listener, the control socket)."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise ConfigError(
            f"{flag} {path}: a unix socket path may have at most {MAX_SOCKET_PATH} bytes, "
            f"this one has {size}; choose a shorter path"
        )
    if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.stat().st_mode)):
        raise ConfigError(f"{flag} {path} exists and is not a socket; remove it or choose another")
    _folder_ok(flag, path, path.parent)


def check_folder(flag: str, path: Path, *, sockets: bool = False) -> None:
    """A folder serve creates things in (job sockets)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{flag} {path} is a file, not a folder; remove it or give another folder"
        )
    if path.exists():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path}: not writable; fix its owner or mode")
    else:
        _folder_ok(flag, path, path)
    if sockets:
        size = len(os.fsencode(path)) + 1 + _SHORTEST_JOB_SOCKET
        if size > MAX_SOCKET_PATH:
            raise ConfigError(
                f"{flag} {path}: job sockets there would be at least {size} bytes long, "
                f"the kernel allows {MAX_SOCKET_PATH}; choose a shorter folder"
            )


def check_tls(cert: Path, key: Path, ca: Path | None) -> None:
    """The TLS files load as PEM (cert and key matching, the CA a certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError:
        raise ConfigError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its matching PEM "
            "key; give both in PEM format (-----BEGIN ...), the key the certificate's"
        ) from None
    except OSError as error:
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: {error.strerror}") from None
    if ca is None:
        return
    try:
        context.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise ConfigError(
            f"--tls-ca {ca}: not a PEM CA certificate ({reason}); give the CA in PEM format"
        ) from None


def listen_error(url: str, error: OSError) -> ConfigError:
    """A listener that could not be opened, as one line with the fix."""
    if error.errno == errno.EADDRINUSE:
        fix = "stop what listens there or choose another --listen address"
        reason = "address already in use"
    elif error.errno in (errno.EACCES, errno.EPERM):
        fix = "run as root or choose a port above 1023"
        reason = "permission denied"
    elif error.errno == errno.EADDRNOTAVAIL:
        fix = "use an address of this machine"
        reason = "no such address here"
    else:
        fix = "check the address"
        reason = error.strerror or str(error)
    return ConfigError(f"--listen {url}: cannot listen ({reason}); {fix}")


@dataclass
class Footprint:
    """What a start may create, as it was before: `undo` removes what is new."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # missing before, deepest first

    @classmethod
    def before(cls, files: Iterable[Path], folders: Iterable[Path] = ()) -> Footprint:
        footprint = cls()
        missing_folders: set[Path] = set()
        for path in files:
            if not (path.exists() or path.is_symlink()):
                footprint.files.append(path)
            missing_folders.update(_missing(path.parent))
        for folder in folders:
            missing_folders.update(_missing(folder))
        footprint.folders = sorted(missing_folders, key=lambda p: len(p.parts), reverse=True)
        return footprint

    def undo(self) -> None:
        """Remove the files that are new (sqlite's companions too) and the new folders
        that are empty again; never anything that existed before."""
        for path in self.files:
            for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                with contextlib.suppress(OSError):
                    if not candidate.is_dir():
                        candidate.unlink()
        for folder in self.folders:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _missing(folder: Path) -> list[Path]:
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    return missing


def check_serve(
    settings: ServeSettings, *, state_db: Path, control: Path, jobs_dir: Path | None
) -> None:
    """Every path of `dockmoat serve`, before anything is created; ConfigError."""
    for listener in settings.listeners:
        endpoint = listener.endpoint
        if endpoint.kind == "unix" and endpoint.path is not None:
            check_socket("--listen", endpoint.path)
        elif endpoint.tls is not None:
            check_tls(endpoint.tls.cert, endpoint.tls.key, endpoint.tls.ca)
    group = settings.socket_group
    if group is not None and not group.isdigit():
        try:
            grp.getgrnam(group)
        except KeyError:
            raise ConfigError(
                f"--socket-group {group}: no such group; give an existing group's name or gid"
            ) from None
    metrics = settings.metrics
    if metrics is not None and metrics.kind == "unix" and metrics.path is not None:
        check_socket("--metrics-listen", metrics.path)
    if settings.audit_log not in (None, "-"):
        check_file("--audit-log", Path(str(settings.audit_log)))
    check_file("--state-db", state_db)
    check_socket("--control-socket", control)
    if jobs_dir is not None:
        check_folder("--jobs-dir", jobs_dir, sockets=True)


def serve_footprint(
    settings: ServeSettings, *, state_db: Path, control: Path, jobs_dir: Path
) -> Footprint:
    """What a start of `serve` with these settings may create."""
    files = [state_db, control]
    if settings.audit_log not in (None, "-"):
        files.append(Path(str(settings.audit_log)))
    files += [
        listener.endpoint.path for listener in settings.listeners
        if listener.endpoint.kind == "unix" and listener.endpoint.path is not None
    ]  # fmt: skip
    return Footprint.before(files, folders=[jobs_dir])
