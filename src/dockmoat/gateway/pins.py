"""Bind sources pinned: the folder the policy checked is the folder dockerd mounts.

dockerd mounts a bind source by its path each time the container starts (and at
every restart); the policy checks the path when the container is created. A job
that can write inside an allowed folder (its own workspace) could create a
container binding WS/d while d is a folder, replace d with a symlink to `/`, and
start it: dockerd follows the link. Verified on 20.10; no race is needed.

After the policy allowed a create, each bind source is opened one component at a
time without following symlinks (O_PATH|O_NOFOLLOW), the path the opened object
has now is checked by the same policy again, and the object is bind-mounted onto
a fresh name in the pin folder (root-only, and refused as a bind source itself).
The create then names the pin: swapping WS/d later changes nothing for that
container, restarts included. A sweep removes pins no container names.

Answers show the source the client asked for, not its pin (`PinnedSources`): each
pin's source is written beside it (`sources/<pin name>`, kept across restarts of
serve), and a container's inspect answer names the source again (`Mounts`,
`HostConfig.Binds`, `HostConfig.Mounts`; a list's `Mounts`), as SDKs, compose and
tests read it.

All of it needs root in dockerd's mount namespace; `serve` checks that at start-up
(`--bind-pins auto` pins when it can and warns when it cannot).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import secrets
import socket
import stat
import struct
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from dockmoat.api.request import ApiRequest
from dockmoat.errors import ConfigError
from dockmoat.gateway.config import Endpoint, PinMode
from dockmoat.gateway.stages import PermissivePolicy, Policy, UpstreamClient
from dockmoat.policy import hostpaths
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite
from dockmoat.policy.rules.containers import create_bind_sources, rebind

log = logging.getLogger("dockmoat.gateway")

RULE = "containers.bind-pins"
#: Beside the pins: one file per pin holding the source it stands for.
SOURCES = "sources"
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 2
#: An unreferenced pin younger than this may belong to a create still in flight.
GRACE = 120.0
SWEEP_EVERY = 60.0

_libc = ctypes.CDLL(None, use_errno=True)


class SourceChanged(OSError):
    """A bind source that is no longer what the policy checked."""


class SourceMissing(Exception):
    """A bind `Mounts` source that does not exist (dockerd refuses those too)."""


def _mount(source: str, target: str, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), target)


def _unmount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code != errno.EINVAL:  # EINVAL: not a mount point (a half-made pin)
            raise OSError(code, os.strerror(code), target)


def open_nofollow(path: str, *, create: bool) -> int:
    """An O_PATH descriptor of `path` (absolute, no symlinks), walked without following any.

    A component that is a symlink now (or a non-folder in the middle) raises
    SourceChanged. Missing folders are made (mode 0755, as dockerd makes missing
    `Binds` sources) when `create`, else FileNotFoundError.
    """
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [part for part in path.split("/") if part]
        for index, name in enumerate(parts):
            if name in (".", ".."):
                raise SourceChanged(errno.EINVAL, "not a clean path", path)
            try:
                child = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                child = os.open(name, flags, dir_fd=fd)
            mode = os.fstat(child).st_mode
            if stat.S_ISLNK(mode) or (index < len(parts) - 1 and not stat.S_ISDIR(mode)):
                os.close(child)
                raise SourceChanged(errno.ELOOP, "a symlink appeared in it", path)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def held_path(fd: int) -> str:
    """Where the object behind `fd` is now (the kernel's own name for it)."""
    here = str(Path(f"/proc/self/fd/{fd}").readlink())
    if here.endswith(" (deleted)") or not here.startswith("/"):
        raise SourceChanged(errno.ENOENT, "it was removed", here)
    return here


def pin_born(name: str) -> float | None:
    """When a pin was made (its name starts with the time in ms); None: not a pin."""
    stamp, _, rest = name.partition("-")
    return int(stamp) / 1000 if stamp.isdigit() and rest else None


class BindPins:
    """Pins for container creates (`__call__`, pipeline's hook) and their sweep."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The tenant (job) each pin was made for ("" without tenancy): `release`
        # removes a closed job's pins at once, without waiting for the sweep's grace.
        self.made_for: dict[str, str] = {}
        # The source each pin stands for, as the client wrote it (read back from
        # `sources/` after a restart; bounded by the number of pins).
        self._sources: dict[str, str] = {}
        self._prefix = f"{directory}/"
        # What any answer naming one of these pins contains (Go's JSON writes paths as is).
        self.marker = self._prefix.encode()
        # The pins whose sources are written down (this serve's and earlier ones'): while
        # there are none, no answer can name a pin and none is held to be read.
        self._named = self._written_down()

    async def __call__(self, request: ApiRequest, policy: Policy) -> Decision:
        body = request.body_json
        if request.route.name != "containers.create" or not isinstance(body, dict):
            return Allow(rule=RULE)
        if isinstance(policy, PermissivePolicy) or getattr(policy, "profile", "") == "permissive":
            # Nothing checked the sources, so there is nothing to keep true: `permissive`
            # forwards the create as sent (inspect shows the client's own sources).
            return Allow(rule=RULE)
        # Binds sources may be made (dockerd makes them); Mounts sources must exist.
        sources: dict[str, bool] = {}
        for source, where in create_bind_sources(body):
            sources[source] = sources.get(source, False) or where.endswith("Binds")
        if not sources:
            return Allow(rule=RULE)
        made: list[str] = []
        pins: dict[str, str] = {}
        current: dict[str, str] = {}
        source = ""
        try:
            for source, create in sources.items():
                pins[source], current[source] = self._pin(source, create=create)
                made.append(pins[source])
            # What was opened, by the name it has now, is checked like the request was.
            moved = request._replace(body_json=rebind(body, current), body_raw=None)
            check = policy.evaluate(moved)
            if isinstance(check, Deny):
                raise SourceChanged(errno.EPERM, "it now resolves elsewhere", source)
        except SourceMissing:
            self._drop(made)
            return Deny(
                RULE,
                f'invalid mount config for type "bind": bind source path does not exist: {source}',
                400,
            )
        except OSError as error:  # fail closed: nothing is created
            self._drop(made)
            if isinstance(error, SourceChanged):
                what = f"changed while it was checked ({error.strerror})"
            else:
                log.warning("pinning bind source %s failed: %s", source, error)
                what = f"could not be pinned ({error.strerror or error})"
            return Deny(
                RULE,
                f"dockmoat: {RULE}: the bind source {source} {what}. "
                "Nothing was created; send the request again",
            )
        for asked, pin in pins.items():
            self.made_for[pin] = request.client.tenant or ""
            self._remember(pin, asked)
        return Rewrite(
            rule=RULE,
            body_json=rebind(body, pins),
            notes=(f"{len(pins)} bind source(s) pinned under {self.directory}",),
        )

    def _pin(self, source: str, *, create: bool) -> tuple[str, str]:
        """(pin path, the source object's own path now) for one checked source."""
        try:
            fd = open_nofollow(hostpaths.resolve(source), create=create)
        except FileNotFoundError as error:
            raise SourceMissing(source) from error
        try:
            here = held_path(fd)
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            pin = self.directory / f"{time.time_ns() // 1_000_000}-{secrets.token_hex(8)}"
            if is_dir:
                pin.mkdir(0o700)
            else:  # files, sockets: a file is their mount point
                os.close(os.open(pin, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            try:
                _mount(f"/proc/self/fd/{fd}", str(pin), MS_BIND | MS_REC)
            except OSError:
                _remove(str(pin))
                raise
            return str(pin), here
        finally:
            os.close(fd)

    def _remember(self, pin: str, source: str) -> None:
        """Write down which source a pin stands for (root-only, beside the pins)."""
        self._sources[pin] = source
        self._named.add(Path(pin).name)
        try:
            folder = self.directory / SOURCES
            folder.mkdir(mode=0o700, exist_ok=True)
            (folder / Path(pin).name).write_text(source)
        except OSError as error:  # answers then show the pin; the pin itself holds
            log.warning("recording the source of pin %s failed: %s", pin, error)

    def source_of(self, path: str) -> str | None:
        """The source the client asked for, when `path` is one of this serve's pins."""
        if not path.startswith(self._prefix):
            return None
        known = self._sources.get(path)
        if known is None:
            name = path[len(self._prefix) :]
            if pin_born(name) is None or "/" in name:
                return None
            try:
                known = (self.directory / SOURCES / name).read_text()
            except OSError:
                return None
            self._sources[path] = known
        return known

    def shown(self, container: dict[str, Any]) -> dict[str, Any]:
        """A container's inspect answer with each pin named by its source again (the
        same object when it names no pin)."""
        changed = False

        def source(path: object) -> object:
            nonlocal changed
            asked = self.source_of(path) if isinstance(path, str) else None
            if asked is None:
                return path
            changed = True
            return asked

        def bind(entry: object) -> object:
            if not isinstance(entry, str):
                return entry
            path, colon, rest = entry.partition(":")
            asked = source(path)
            return f"{asked}{colon}{rest}" if asked is not path else entry

        def mounts(items: object) -> object:
            if not isinstance(items, list):
                return items
            return [
                {**item, "Source": source(item["Source"])}
                if isinstance(item, dict) and "Source" in item
                else item
                for item in items
            ]

        out = dict(container)
        if "Mounts" in out:
            out["Mounts"] = mounts(out["Mounts"])
        host = container.get("HostConfig")
        if isinstance(host, dict):
            host = out["HostConfig"] = dict(host)
            if isinstance(host.get("Binds"), list):
                host["Binds"] = [bind(entry) for entry in host["Binds"]]
            if "Mounts" in host:
                host["Mounts"] = mounts(host["Mounts"])
        return out if changed else container

    @property
    def active(self) -> bool:
        """Whether any pin's source is written down (answers may then name a pin)."""
        return bool(self._named)

    def _written_down(self) -> set[str]:
        try:
            return {entry.name for entry in (self.directory / SOURCES).iterdir()}
        except OSError:
            return set()

    def _drop(self, pins: Collection[str]) -> None:
        for pin in pins:
            try:
                unpin(pin)
            except OSError as error:
                log.warning("removing pin %s failed: %s", pin, error)

    def sweep(
        self, in_use: Collection[str], now: float, only: Collection[str] | None = None
    ) -> list[str]:
        """Remove the pins no container names (older than GRACE; `only`: just those
        pins, whatever their age); returns those removed."""
        removed: list[str] = []
        with os.scandir(self.directory) as entries:
            names = [entry.name for entry in entries]
        for name in names:
            path = str(self.directory / name)
            born = pin_born(name)
            if path in in_use or born is None:
                continue
            if only is None and now - born < GRACE:
                continue
            if only is not None and path not in only:
                continue
            try:
                unpin(path)
                removed.append(path)
                self.made_for.pop(path, None)
                self._sources.pop(path, None)
                self._named.discard(name)
            except OSError as error:
                log.warning("removing pin %s failed: %s", path, error)
        if only is None:
            self._named = self._written_down()  # pins another serve of this daemon made
        return removed

    async def release(self, upstream: UpstreamClient, tenant: str | None) -> list[str]:
        """A job closed (`tenant`) or serve stops (None): remove the pins made for it
        (for anyone) that no container names now, young ones too. Pins a container
        still names stay (it needs them when it starts again); nothing is removed
        when the daemon's container list cannot be read."""
        only = [pin for pin, owner in self.made_for.items() if tenant is None or owner == tenant]
        if not only:
            return []
        try:
            status, _headers, body = await upstream.request("GET", "/containers/json?all=1")
            if status != 200:
                return []
            in_use = mount_sources(json.loads(body))
        except Exception as error:  # noqa: BLE001 - keep them; the next sweep tries again
            log.warning("releasing bind pins failed: %s", error)
            return []
        removed = self.sweep(in_use, time.time(), only=only)
        if removed:
            log.info(
                "removed %d bind pin(s) of %s",
                len(removed),
                f"job {tenant}" if tenant else "this serve",
            )
        return removed

    async def sweep_forever(self, upstream: UpstreamClient) -> None:
        """Sweep now and every SWEEP_EVERY seconds, from the daemon's list of containers."""
        while True:
            try:
                status, _headers, body = await upstream.request("GET", "/containers/json?all=1")
                if status == 200:  # sweep only on a whole list: a pin in use must stay
                    removed = self.sweep(mount_sources(json.loads(body)), time.time())
                    if removed:
                        log.info("removed %d pin(s) no container uses", len(removed))
            except Exception as error:  # noqa: BLE001 - the next round tries again
                log.warning("sweeping bind pins failed: %s", error)
            await asyncio.sleep(SWEEP_EVERY)


def mount_sources(containers: Any) -> set[str]:
    """Every mount source named in a `GET /containers/json` answer."""
    found: set[str] = set()
    for container in containers if isinstance(containers, list) else []:
        mounts = container.get("Mounts") if isinstance(container, dict) else None
        for mount in mounts if isinstance(mounts, list) else []:
            if isinstance(mount, dict) and isinstance(mount.get("Source"), str):
                found.add(mount["Source"])
    return found


def unpin(pin: str) -> None:
    _unmount(pin)
    _remove(pin)
    path = Path(pin)
    _remove(str(path.parent / SOURCES / path.name))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):  # noqa: PTH112, PTH114
            os.rmdir(path)  # noqa: PTH106
        else:
            os.unlink(path)  # noqa: PTH108


def set_up(mode: PinMode, directory: Path, upstream: Endpoint) -> tuple[BindPins | None, str]:
    """The pins for `serve`, and the line to log about them; ConfigError when `on` cannot."""
    if mode == "off":
        return None, "bind sources are not pinned (--bind-pins off)"
    # One folder per daemon: a sweep knows only its own daemon's containers.
    directory = directory / hashlib.sha256(upstream.url.encode()).hexdigest()[:16]
    reason = _unusable(directory, upstream)
    if reason is None:
        return BindPins(directory), f"bind sources pinned under {directory}"
    if mode == "on":
        raise ConfigError(f"--bind-pins on: {reason}")
    return None, (
        f"bind sources are not pinned ({reason}): a job that can write in an allowed folder "
        "can swap a checked folder for a symlink before its container starts. Run serve as "
        "root next to dockerd, or use --profile restricted (no binds)"
    )


def _unusable(directory: Path, upstream: Endpoint) -> str | None:
    """Why pins cannot work here, or None."""
    if upstream.kind != "unix" or upstream.path is None:
        return "the daemon is not on a local unix socket"
    if os.geteuid() != 0:
        return "not running as root"
    try:
        pid = _peer_pid(str(upstream.path))
        theirs = Path(f"/proc/{pid}/ns/mnt").stat().st_ino
        if pid <= 0 or theirs != Path("/proc/self/ns/mnt").stat().st_ino:
            return "dockmoat does not run in dockerd's mount namespace"
    except OSError as error:
        return f"dockerd's mount namespace cannot be read ({error})"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        directory.parent.chmod(0o700)
        probe = directory / f".probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        try:
            _mount(str(probe), str(probe), MS_BIND)
            _unmount(str(probe))
        finally:
            probe.rmdir()
    except OSError as error:
        return f"cannot bind-mount under {directory} ({error})"
    return None


def _peer_pid(path: str) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid: int = struct.unpack("3i", creds)[0]
    return pid
