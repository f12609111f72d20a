"""A nested daemon for NAME: a warm one from a running pool when one fits, else a
cold start. `dockmoat dind up` and `dockmoat run --mode dind` both get theirs here.

A warm hand-over imports neither the docker SDK nor cryptography (a large part of
a warm `up`): the manager is asked for only to start cold, or to remove a warm
daemon that died after the pool's last check.

The pool pings a warm daemon just before it renames it to NAME, but a daemon can die
in between (killed, OOM, its engine restarting): a warm daemon is handed on only
once it answers `/_ping` over its mutual TLS here; one that does not is removed
(`down NAME`) and another is taken, or NAME starts cold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from dockmoat.dind import naming, pool_client, probe, spec
from dockmoat.dind.info import DindInfo
from dockmoat.errors import EngineError, config_errors

if TYPE_CHECKING:
    from dockmoat.dind.manager import DindManager

Progress = Callable[[str], None]

# A warm daemon answered the pool a moment ago: one that does not answer within this
# long has died since.
_WARM_PING = 5.0
# Dead warm daemons removed before starting cold instead.
_WARM_TRIES = 3


class Acquired(NamedTuple):
    info: DindInfo
    # Taken from a pool: it is named and answered the pool, but nothing more was
    # done to it (no preload, no docker context); a cold start did both itself.
    warm: bool


def acquire(
    name: str,
    options: spec.DindOptions,
    manager: Callable[[], DindManager],
    progress: Progress,
    *,
    host: str | None = None,
    socket_path: Path | None = None,
    use_pool: bool = True,
    wait_cache: float = 0.0,
    pull: bool = False,
) -> Acquired:
    """Take a warm daemon of `options`' shape from the pool on `socket_path` (default:
    `pool_client.default_socket()`) when one fits, else start NAME cold (`up`).

    `manager` hands out the caller's manager, called only for a cold start; the caller
    closes it. With `options.cache` and `wait_cache`, a busy key is waited for by
    trying cold starts and the pool in turn (see `_wait_for_key`).
    """
    if use_pool:
        info = take_live(name, options, manager, progress, host, socket_path)
        if info is not None:
            return Acquired(info, warm=True)
        if options.cache and wait_cache > 0:
            deadline = time.monotonic() + wait_cache
            got = _wait_for_key(name, options, manager, progress, host, socket_path, deadline, pull)
            if got is not None:
                return got
            wait_cache = max(0.0, deadline - time.monotonic())
    return Acquired(manager().up(name, options, wait_cache=wait_cache, pull=pull), warm=False)


def take_live(
    name: str,
    options: spec.DindOptions,
    manager: Callable[[], DindManager],
    progress: Progress,
    host: str | None,
    socket_path: Path | None,
) -> DindInfo | None:
    """`take_warm`, handing on only a daemon that answers `/_ping` over its mTLS now.

    A warm daemon that died after the pool's check is already NAME's (renamed): it
    is removed with `down NAME` (an error there ends the call: NAME stays taken) and
    the pool is asked again, at most `_WARM_TRIES` times; None: start cold.
    """
    for _ in range(_WARM_TRIES):
        info = take_warm(name, options, host, socket_path, progress)
        if info is None:
            return None
        tls = probe.tls_context(info.cert_path)
        if probe.ping(info.host_address, info.port, tls, _WARM_PING):
            return info
        progress(f"warm daemon {info.instance} does not answer /_ping; removing it")
        manager().down(name)
    return None


def take_warm(
    name: str,
    options: spec.DindOptions,
    host: str | None,
    socket_path: Path | None,
    progress: Progress,
) -> DindInfo | None:
    """The pool's warm daemon of `options`' shape, renamed to NAME; None when no pool
    runs or none fits."""
    with config_errors():
        naming.validate_name(name)
    shape = spec.pool_shape(options, host)
    reply = pool_client.take(socket_path or pool_client.default_socket(), name, shape)
    if reply is None:
        return None
    try:
        info = DindInfo.from_json(reply)
    except (KeyError, TypeError, ValueError) as error:
        raise EngineError(f"the pool answered garbage: {error}") from None
    progress(f"took warm daemon {info.instance} from the pool")
    return info


def _wait_for_key(
    name: str,
    options: spec.DindOptions,
    manager: Callable[[], DindManager],
    progress: Progress,
    host: str | None,
    socket_path: Path | None,
    deadline: float,
    pull: bool,
) -> Acquired | None:
    """A cache KEY is busy while a pool may hold it: whoever frees the key (the job's
    daemon going down), the pool's replacement or this cold start gets it first; so
    ask the pool again between cold tries instead of waiting on a key the pool's warm
    daemon may hold for good. None: the key stayed busy until a second before
    `deadline` (the cold `up` then waits out the rest or says who holds it)."""
    from dockmoat.dind import cache

    told = False
    while time.monotonic() < deadline - 1.0:
        try:
            return Acquired(manager().up(name, options, wait_cache=0.0, pull=pull), warm=False)
        except cache.CacheBusy as busy:
            if not told:
                progress(f"cache key {busy.key} is in use by {busy.holder}; waiting")
                told = True
        time.sleep(0.5)
        info = take_live(name, options, manager, progress, host, socket_path)
        if info is not None:
            return Acquired(info, warm=True)
    return None
