"""The manager's state directory: its CA, per-daemon client certificates, lock files.

Layout (directories 0700, keys 0600):

    STATE/ca/{cert.pem,key.pem}              the manager CA (made once)
    STATE/daemons/<instance>/client/{ca,cert,key}.pem   DOCKER_CERT_PATH of a daemon
    STATE/daemons/<instance>/claimant        who is starting it (for gc)
    STATE/locks/cache-<key>.lock             flock while claiming a cache key
    STATE/images/<image id hex>.<fact>       what an image's dockerd was found to know
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dockmoat.dind.files import write_private
from dockmoat.errors import ConfigError

if TYPE_CHECKING:
    from dockmoat.dind import certs

STATE_ENV = "DOCKMOAT_STATE_DIR"
ROOT_DEFAULT = Path("/var/lib/dockmoat/dind")


def default_state_dir(env: dict[str, str] | None = None, uid: int | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV])
    if (os.geteuid() if uid is None else uid) == 0:
        return ROOT_DEFAULT
    home = Path(env.get("HOME", "~")).expanduser()
    base = env.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(base) / "dockmoat" / "dind"


def _private_dir(path: Path) -> Path:
    """Create `path` 0700, or check an existing one is ours and closed to others."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise ConfigError(f"state directory {path} belongs to uid {info.st_uid}, not to you")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(
            f"state directory {path} is open to others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"it holds private keys: run chmod 700 {path}"
        )
    return path


class StateDir:
    """One manager's state directory (checked on construction)."""

    def __init__(self, root: Path) -> None:
        self.root = _private_dir(root)

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """An exclusive flock on STATE/locks/<name>.lock for the duration of the block."""
        lock_dir = _private_dir(self.root / "locks")
        fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock, also when the process dies

    def ca(self) -> certs.KeyPair:
        """The manager CA, made on first use (under a lock: concurrent `up`s make one).

        `cryptography` is imported here, not with this module: a cold `up` imports it
        in the background while the engine creates the daemon (launch.py).
        """
        from dockmoat.dind import certs

        ca_dir = self.root / "ca"
        cert_path, key_path = ca_dir / "cert.pem", ca_dir / "key.pem"
        if not cert_path.exists():
            with self.locked("ca"):
                if not cert_path.exists():
                    _private_dir(ca_dir)
                    pair = certs.new_ca()
                    write_private(key_path, pair.key_pem)
                    write_private(cert_path, pair.cert_pem, 0o644)
        pair = certs.KeyPair(cert_path.read_bytes(), key_path.read_bytes())
        try:
            certs.load_ca(pair)
        except ValueError as error:
            raise ConfigError(f"the CA in {ca_dir} is unusable: {error}") from None
        return pair

    def image_fact(self, image_id: str, fact: str) -> str | None:
        """What was remembered about the image `image_id` (`sha256:<hex>`), or None.

        An image ID is the hash of the image's content, so a fact about its files
        (what its dockerd accepts) holds for as long as the ID exists.
        """
        path = self._fact_path(image_id, fact)
        try:
            return (path.read_text().strip() or None) if path else None
        except OSError:
            return None

    def remember_image_fact(self, image_id: str, fact: str, value: str) -> None:
        path = self._fact_path(image_id, fact)
        if path is not None:
            _private_dir(self.root / "images")
            write_private(path, value.encode())

    def _fact_path(self, image_id: str, fact: str) -> Path | None:
        digest = image_id.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not re.fullmatch(r"[a-z-]+", fact):
            return None
        return self.root / "images" / f"{digest}.{fact}"

    def daemon_dir(self, instance: str) -> Path:
        return self.root / "daemons" / instance

    def client_dir(self, instance: str) -> Path:
        return self.daemon_dir(instance) / "client"

    def write_client(
        self, instance: str, daemon_certs: certs.DaemonCerts, claimant: str, engine: str = ""
    ) -> Path:
        """Write the client side in the layout the docker CLI expects; return DOCKER_CERT_PATH.

        `engine` names the engine the daemon runs on: `gc` against another engine
        must not take this daemon for gone.
        """
        _private_dir(self.root / "daemons")
        directory = _private_dir(self.daemon_dir(instance))
        write_private(directory / "claimant", claimant.encode())
        write_private(directory / "engine", engine.encode())
        client = _private_dir(self.client_dir(instance))
        write_private(client / "ca.pem", daemon_certs.client_ca_pem, 0o644)
        write_private(client / "cert.pem", daemon_certs.client.cert_pem, 0o644)
        write_private(client / "key.pem", daemon_certs.client.key_pem)
        return client

    def remove_daemon(self, instance: str) -> bool:
        directory = self.daemon_dir(instance)
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            return True
        return False

    def instances(self) -> list[str]:
        daemons = self.root / "daemons"
        if not daemons.is_dir():
            return []
        return sorted(entry.name for entry in daemons.iterdir() if entry.is_dir())

    def engine_of(self, instance: str) -> str | None:
        try:
            return (self.daemon_dir(instance) / "engine").read_text()
        except OSError:
            return None

    def claimant_of(self, instance: str) -> str | None:
        try:
            return (self.daemon_dir(instance) / "claimant").read_text()
        except OSError:
            return None
