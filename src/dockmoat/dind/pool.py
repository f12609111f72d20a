"""`dockmoat dind pool`: keep N started, healthy, unassigned daemons; hand them out over a socket.

A daemon leaves the pool by being renamed to `dockmoat-dind-NAME` (see naming.py)
and is never returned: a job may have changed anything in it. Each hand-out
starts a replacement at once. On exit the pool removes the daemons it still holds;
if it is killed, `dockmoat dind gc` removes them (their claimant is this process).

Cache keys: besides N plain daemons, the pool keeps one warm daemon on each cache
key's data volume (`dockmoat-dind-cache-KEY`). A key's volume carries one daemon at
a time (cache.py), so the replacement for a handed-out keyed daemon starts only once
the job's daemon is down; until then `up --cache KEY` finds the key busy, as without
a pool. The warm keyed daemon holds the key like any live daemon does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockmoat.dind import cache, claimant, naming, probe
from dockmoat.dind.info import DindInfo
from dockmoat.dind.manager import DindManager
from dockmoat.dind.pool_client import read_message, send_message
from dockmoat.dind.pool_metrics import MetricsThread, PoolCounts, PoolState, outcome
from dockmoat.dind.spec import DindOptions
from dockmoat.errors import ConfigError, DockmoatError

if TYPE_CHECKING:
    from dockmoat.gateway.config import Endpoint

# Idle daemons are re-checked this often, so a hand-out never gets a dead one.
_HEALTH_EVERY = 10.0
_CLIENT_TIMEOUT = 5.0
# Failed starts back off so a broken image does not spin the engine.
_BACKOFF = 5.0
# How often a busy cache key (its volume held by a job's daemon) is tried again.
_KEY_RETRY = 1.0
# How long a request for a key whose warm daemon is starting waits for it (below the
# client's timeout, pool_client.take).
_WAIT_STARTING = 20.0


@dataclass(slots=True)
class _Warm:
    container: str
    info: DindInfo
    key: str | None = None


def check_settings(size: int, cache_keys: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The cache keys, each once; ConfigError when size and keys make no pool."""
    keys = tuple(dict.fromkeys(cache_keys))
    if not 0 <= size <= 64:
        raise ConfigError("--size must lie between 0 and 64")
    if size == 0 and not keys:
        raise ConfigError("a pool needs --size 1 or more, or at least one --cache KEY")
    if len(keys) > 64:
        raise ConfigError("a pool holds at most 64 cache keys")
    for key in keys:
        naming.validate_cache_key(key)
    return keys


def metrics_endpoint(url: str, socket_path: Path) -> Endpoint:
    """`--metrics-listen` parsed as serve's; ConfigError when it is bad or the pool's socket."""
    from dockmoat.gateway.config import parse_metrics_listen

    endpoint = parse_metrics_listen(url)
    if endpoint.path is not None and endpoint.path == socket_path:
        raise ConfigError(f"--metrics-listen {url} is also the pool's --socket")
    return endpoint


class PoolService:
    """The pool; `serve()` runs until `stop()` (or a signal handler calling it)."""

    def __init__(
        self,
        manager: DindManager,
        options: DindOptions,
        size: int,
        socket_path: Path,
        *,
        cache_keys: tuple[str, ...] | list[str] = (),
        starters: int = 2,
        metrics: Endpoint | None = None,
    ) -> None:
        keys = check_settings(size, cache_keys)
        if options.cache or options.preload:
            raise ConfigError(
                "a pool's options carry no --cache or --preload: pass cache keys as "
                "cache_keys (`dind pool --cache KEY`); `up --preload` adds images"
            )
        self.manager = manager
        self.options = options
        self.size = size
        self.cache_keys = keys
        self.socket_path = socket_path
        self.starters = max(1, min(starters, size + len(keys)))
        self.pool_id = naming.new_instance(None)
        self.who = claimant.current()
        self._lock = threading.Condition()
        self._ready: list[_Warm] = []
        # Starts under way per slot: None for plain daemons, else the cache key.
        self._starting: dict[str | None, int] = {}
        # A key whose volume a job's daemon holds is not tried again before this time.
        self._key_busy_until: dict[str, float] = {}
        # Hand-outs under way: replacements start once they are answered, so the
        # engine's work on a replacement (network, container, start) does not slow
        # down the rename a waiting `up` is blocked on.
        self._handing_out = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.handed_out = 0
        self.last_error: str | None = None
        # Counted for --metrics-listen (pool_metrics.py), served while `serve()` runs.
        self.counts = PoolCounts()
        self.metrics = metrics
        self._metrics_thread: MetricsThread | None = None

    def shape(self) -> dict[str, Any]:
        return {**self.options.shape(), "host": self.manager.host or ""}

    # ------------------------------------------------------------- filling

    def _wanted(self) -> tuple[bool, str | None]:
        """The slot a starter should fill next, under the lock: (any, key or None)."""
        if self._handing_out:
            return False, None
        now = time.monotonic()
        for key in self.cache_keys:
            if self._key_busy_until.get(key, 0.0) > now:
                continue
            held = sum(1 for warm in self._ready if warm.key == key)
            if held + self._starting.get(key, 0) == 0:
                return True, key
        plain = sum(1 for warm in self._ready if warm.key is None)
        if plain + self._starting.get(None, 0) < self.size:
            return True, None
        return False, None

    def _starter(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                while not self._stopping.is_set():
                    wanted, key = self._wanted()
                    if wanted:
                        break
                    self._lock.wait(_KEY_RETRY if self.cache_keys else 1.0)
                if self._stopping.is_set():
                    return
                self._starting[key] = self._starting.get(key, 0) + 1
            warm: _Warm | None = None
            failed = False
            started = time.monotonic()
            try:
                options = dataclasses.replace(self.options, cache=key) if key else self.options
                container, info = self.manager.launch_warm(options, self.who, self.pool_id)
                warm = _Warm(container, info, key)
                self.counts.started(time.monotonic() - started)
                self.manager.progress(
                    f"warm daemon ready: {info.instance}" + (f" (cache {key})" if key else "")
                )
            except cache.CacheBusy:
                # A job's daemon holds the key's volume: try again shortly.
                with self._lock:
                    assert key is not None
                    self._key_busy_until[key] = time.monotonic() + _KEY_RETRY
            except DockmoatError as error:
                failed = True
                self.last_error = str(error)
                self.counts.started(time.monotonic() - started, str(error))
                self.manager.progress(f"starting a warm daemon failed: {error}")
            finally:
                with self._lock:
                    self._starting[key] -= 1
                    if warm and not self._stopping.is_set():
                        self._ready.append(warm)
                        warm = None
                    self._lock.notify_all()
            if warm:  # finished while stopping: do not leave it behind
                self._discard(warm)
            elif failed and not self._stopping.is_set():
                self._stopping.wait(_BACKOFF)
                self.last_error = None

    def _health(self) -> None:
        while not self._stopping.wait(_HEALTH_EVERY):
            with self._lock:
                ready = list(self._ready)
            for warm in ready:
                if not self._alive(warm):
                    with self._lock:
                        if warm in self._ready:
                            self._ready.remove(warm)
                        self._lock.notify_all()
                    self.counts.evicted()
                    self._discard(warm)

    def _alive(self, warm: _Warm) -> bool:
        try:
            return probe.ping(
                warm.info.host_address, warm.info.port, probe.tls_context(warm.info.cert_path), 2.0
            )
        except OSError:
            return False

    def _discard(self, warm: _Warm) -> None:
        with contextlib.suppress(DockmoatError, OSError):
            self.manager.destroy(warm.container)

    # ------------------------------------------------------------- hand-out

    def take(self, name: str, shape: object) -> dict[str, Any]:
        """Serve one request; the reply dict of the protocol in pool_client.py."""
        try:
            naming.validate_name(name)
        except ValueError as error:
            return {"ok": False, "reason": "error", "message": str(error)}
        if not isinstance(shape, dict):
            return {"ok": False, "reason": "shape", "message": "this pool holds other daemons"}
        wanted = dict(shape)
        key = wanted.pop("cache", None)
        if wanted != self.shape():
            return {"ok": False, "reason": "shape", "message": "this pool holds other daemons"}
        if key is not None and key not in self.cache_keys:
            return {
                "ok": False,
                "reason": "shape",
                "message": f"this pool holds no daemon for cache key {key}",
            }
        if key is None and self.size == 0:
            return {"ok": False, "reason": "shape", "message": "this pool holds only cache keys"}
        deadline = time.monotonic() + _WAIT_STARTING
        while True:
            with self._lock:
                warm = self._pop_ready(key)
                # A keyed daemon being started is worth waiting for: a cold start would
                # only find its key busy.
                while (
                    warm is None
                    and key is not None
                    and self._starting.get(key, 0) > 0
                    and not self._stopping.is_set()
                    and time.monotonic() < deadline
                ):
                    self._lock.wait(0.2)
                    warm = self._pop_ready(key)
                if warm is None:
                    return {"ok": False, "reason": "empty", "message": "no warm daemon ready"}
                self._handing_out += 1
            try:
                reply = self._hand_out(warm, name)
            finally:
                with self._lock:
                    self._handing_out -= 1
                    self._lock.notify_all()  # a starter begins the replacement now
            if reply is not None:
                return reply

    def _hand_out(self, warm: _Warm, name: str) -> dict[str, Any] | None:
        """Rename a popped warm daemon to NAME: the reply, or None when it was dead
        (discarded: take another)."""
        if not self._alive(warm):
            self.counts.evicted()
            self._discard(warm)
            return None
        try:
            info = self.manager.assign(warm.container, name, warm.info)
        except ConfigError as error:
            with self._lock:
                self._ready.insert(0, warm)  # not handed out: still clean
            return {"ok": False, "reason": "exists", "message": str(error)}
        except DockmoatError as error:
            self._discard(warm)
            return {"ok": False, "reason": "error", "message": str(error)}
        self.handed_out += 1
        self.manager.progress(f"handed {info.instance} to {name}")
        return {"ok": True, "daemon": info.to_json()}

    def _pop_ready(self, key: str | None) -> _Warm | None:
        for index, warm in enumerate(self._ready):
            if warm.key == key:
                return self._ready.pop(index)
        return None

    def _serve_client(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(_CLIENT_TIMEOUT)
                request = read_message(conn)
            except (OSError, ValueError):
                return  # nothing readable asked (a probe of the socket): not counted
            received = time.monotonic()
            if request.get("op") != "take":
                reply: dict[str, Any] = {"ok": False, "reason": "error", "message": "unknown op"}
            else:
                reply = self.take(str(request.get("name", "")), request.get("shape"))
            try:
                send_message(conn, reply)
            except OSError:
                self.counts.handout("error", None)  # the client left before the answer
            else:
                self.counts.handout(outcome(reply), time.monotonic() - received)

    # ------------------------------------------------------------- lifecycle

    def _listen(self) -> socket.socket:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if self.socket_path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe_sock:
                try:
                    probe_sock.connect(str(self.socket_path))
                except OSError:
                    self.socket_path.unlink()  # stale: its pool is gone
                else:
                    raise ConfigError(f"a pool already listens on {self.socket_path}")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Root-only from the first moment: the socket hands out daemon keys.
        old = os.umask(0o177)
        try:
            server.bind(str(self.socket_path))
        finally:
            os.umask(old)
        self.socket_path.chmod(0o600)
        server.listen(64)
        server.settimeout(0.5)
        return server

    def serve(self) -> None:
        server = self._listen()
        try:
            if self.metrics is not None:
                self._metrics_thread = MetricsThread(self.metrics, self.state, self.counts)
                self._metrics_thread.start()
            for _ in range(self.starters):
                thread = threading.Thread(target=self._starter, daemon=True)
                thread.start()
                self._threads.append(thread)
            health = threading.Thread(target=self._health, daemon=True)
            health.start()
            self._threads.append(health)
            while not self._stopping.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    raise
                threading.Thread(target=self._serve_client, args=(conn,), daemon=True).start()
        finally:
            server.close()
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
            self.shutdown()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()

    def shutdown(self, wait: float = 120.0) -> None:
        """Stop, wait for starters, and remove every daemon still held (never handed-out ones)."""
        self.stop()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            held, self._ready = self._ready, []
        if self._metrics_thread is not None:
            self._metrics_thread.close()
            self._metrics_thread = None
        for warm in held:
            self._discard(warm)

    def ready_count(self) -> int:
        with self._lock:
            return len(self._ready)

    def ready_for(self, key: str | None) -> int:
        """Warm daemons ready for one cache key (None: the plain ones)."""
        with self._lock:
            return sum(1 for warm in self._ready if warm.key == key)

    def state(self) -> PoolState:
        """Daemons idle and wanted per slot (cache key, "" for plain), for metrics."""
        with self._lock:
            target = {"": self.size} if self.size else {}
            target.update(dict.fromkeys(self.cache_keys, 1))
            idle = dict.fromkeys(target, 0)
            for warm in self._ready:
                slot = warm.key or ""
                idle[slot] = idle.get(slot, 0) + 1
            starting = sum(self._starting.values())
            return PoolState(idle, target, starting, self._stopping.is_set())
