"""The DinD pool fault (issue 23): a pool's warm daemons killed under it while `up`s come.

`dockmoat dind pool --size N` runs on the host engine (the DinD daemons are its
containers; the soak's private dockerd is the guard's, not the pool's), with a state
directory, docker config, socket and metrics socket of its own in the run's folder.
While the soak's load runs through the guard:

- `--pool-size` clients each loop `dockmoat dind up NAME --pool-socket ...` (the real
  CLI), check that the daemon it hands out answers `GET /_ping` over its mutual TLS
  within PING_BOUND seconds, and `dockmoat dind down NAME`;
- a killer `docker kill`s the pool's warm daemons by name (`dockmoat-dindpool-<instance>`,
  a name a hand-out renames away, so a daemon already handed out is never hit): every
  few seconds one of them, every third round all of them (starting ones too).

Afterwards the pool must fill again, stop cleanly (SIGTERM), and leave nothing: no
container, network or volume carrying its claimant or one of the `up`s' instances,
no certificate folder in its state directory, no docker context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak.client import Broken, Conn, Stats
from bench.soak.harness import DOCKMOAT, HOST_ENGINE, parse_metrics
from dockmoat.dind import probe
from dockmoat.dind.info import DindInfo

DIND_IMAGE = "dockmoat-test/dind:latest"
HOST_SOCK = HOST_ENGINE.removeprefix("unix://")
# A daemon `up` printed must answer /_ping over its mTLS within this many seconds
# (`up` returns only once it answers: in practice the first ping does).
PING_BOUND = 5.0
UP_TIMEOUT = 180.0
POOL_PREFIX = "dockmoat-dindpool-"


@dataclass
class UpResult:
    name: str
    status: int
    seconds: float
    warm: bool = False
    answered: float | None = None  # seconds until the first good /_ping, None: never
    error: str = ""
    down: int = 0
    dead_warm: int = 0  # warm daemons `up` was handed dead, removed and replaced


@dataclass
class PoolRun:
    root: Path
    image: str
    size: int
    prefix: str
    proc: subprocess.Popen[bytes] | None = None
    claimant: str = ""
    instances: set[str] = field(default_factory=set)
    ups: list[UpResult] = field(default_factory=list)
    kills: int = 0
    kill_rounds: int = 0

    @property
    def state(self) -> Path:
        return self.root / "dind-state"

    @property
    def config(self) -> Path:
        return self.root / "dind-docker-config"

    @property
    def sock(self) -> Path:
        return self.root / "pool.sock"

    @property
    def metrics_sock(self) -> Path:
        return self.root / "pool-metrics.sock"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKMOAT_STATE_DIR=str(self.state), DOCKER_CONFIG=str(self.config))
        return env

    def start(self) -> None:
        self.state.mkdir(mode=0o700, exist_ok=True)
        self.config.mkdir(mode=0o700, exist_ok=True)
        argv = [
            str(DOCKMOAT),
            *("dind", "pool", "--size", str(self.size), "--image", self.image),
            *("--socket", str(self.sock), "--metrics-listen", f"unix://{self.metrics_sock}"),
        ]
        with (self.root / "pool.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
            )

    def stop(self, timeout: float = 180.0) -> int | None:
        """SIGTERM (the pool removes what it holds); SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def seen_instances(self) -> set[str]:
        """Instances with certificates in the pool's state directory now (ours only)."""
        daemons = self.state / "daemons"
        now = {p.name for p in daemons.iterdir() if p.is_dir()} if daemons.is_dir() else set()
        for instance in now:
            if not self.claimant and instance.startswith("pool-"):
                with contextlib.suppress(OSError):
                    self.claimant = (daemons / instance / "claimant").read_text().strip()
        self.instances |= now
        return now


async def engine(method: str, path: str) -> tuple[int, object]:
    """One request to the host engine (the pool's), on a connection of its own; status 0
    when it broke."""
    conn = Conn(HOST_SOCK, Stats(), timeout=60)
    try:
        r = await conn.request(method, path)
    except Broken:
        return 0, None
    finally:
        await conn.close()
    return r.status, (r.json() if r.body[:1] in (b"[", b"{") else None)


def _filters(**labels: str) -> str:
    value = [f"{k}={v}" if v else k for k, v in labels.items()]
    return urllib.parse.quote(json.dumps({"label": value}))


async def metrics(run: PoolRun) -> dict[str, float]:
    """The pool's /metrics as {sample name with labels: value}."""
    conn = Conn(str(run.metrics_sock), Stats(), timeout=10)
    try:
        r = await conn.request("GET", "/metrics")
    except Broken:
        return {}
    finally:
        await conn.close()
    return parse_metrics(r.body.decode(errors="replace"))


def _idle(m: dict[str, float]) -> int:
    return int(m.get('dockmoat_dind_pool_idle_daemons{cache_key=""}', 0))


async def _warm_names(run: PoolRun) -> list[str]:
    """The pool's warm (or starting) daemons running now: `dockmoat-dindpool-<instance>`."""
    status, listed = await engine(
        "GET", f"/containers/json?filters={_filters(**{'dockmoat.dind.claimant': run.claimant})}"
    )
    if status != 200 or not isinstance(listed, list):
        return []
    names = [str(c["Names"][0]).lstrip("/") for c in listed]
    return [n for n in names if n.startswith(POOL_PREFIX)]


async def killer(run: PoolRun, stop: float, every: float, notes: list[str]) -> None:
    rng = random.Random(23)
    while time.monotonic() < stop - every:
        await asyncio.sleep(every)
        run.seen_instances()
        if not run.claimant:
            continue
        names = await _warm_names(run)
        if not names:
            continue
        run.kill_rounds += 1
        targets = names if run.kill_rounds % 3 == 0 else [rng.choice(names)]
        for name in targets:
            # By name: a daemon handed out meanwhile was renamed and is not hit.
            status, _ = await engine("POST", f"/containers/{name}/kill")
            if status == 204:
                run.kills += 1
            elif status not in (404, 409):
                notes.append(f"docker kill {name}: {status}")


async def _cli(run: PoolRun, *args: str, timeout: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(DOCKMOAT),
        *args,
        env=run.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -9, "", f"timed out after {timeout:.0f} s"
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _answers(info: DindInfo, bound: float) -> float | None:
    """Seconds until the daemon answers /_ping over its mTLS, None if not within `bound`."""
    context = probe.tls_context(info.cert_path)
    start = time.monotonic()
    while True:
        if probe.ping(info.host_address, info.port, context, timeout=min(2.0, bound)):
            return time.monotonic() - start
        if time.monotonic() - start >= bound:
            return None
        time.sleep(0.1)


async def client(run: PoolRun, index: int, stop: float) -> None:
    n = 0
    while time.monotonic() < stop:
        n += 1
        name = f"{run.prefix}-{index}-{n}"
        t0 = time.monotonic()
        status, out, err = await _cli(
            run,
            *("dind", "up", name, "--image", run.image, "--pool-socket", str(run.sock)),
            *("--format", "json"),
            timeout=UP_TIMEOUT,
        )
        result = UpResult(name, status, time.monotonic() - t0)
        # `up` removes a warm daemon that died after the pool's check and takes another.
        result.dead_warm = err.count("does not answer /_ping")
        run.ups.append(result)
        if status == 0:
            try:
                info = DindInfo.from_json(json.loads(out))
                result.warm = info.instance.startswith("pool-")
                result.answered = await asyncio.to_thread(_answers, info, PING_BOUND)
            except (ValueError, KeyError, TypeError) as e:
                result.error = f"up printed no daemon: {e!r}"
        else:
            result.error = (err.strip().splitlines() or ["(no stderr)"])[-1][:300]
        result.down, _, down_err = await _cli(run, "dind", "down", name, timeout=120)
        if result.down != 0 and status == 0:
            result.error += f" down failed: {down_err.strip()[-200:]}"
        await asyncio.sleep(0.3)


async def leftovers(run: PoolRun) -> list[str]:
    """Everything on the host engine the pool or the `up`s made that is still there."""
    left: list[str] = []
    ours = f"{run.prefix}-"
    for kind, path, key in (
        ("container", "/containers/json?all=1&filters=", None),
        ("network", "/networks?filters=", None),
        ("volume", "/volumes?filters=", "Volumes"),
    ):
        status, listed = await engine("GET", path + _filters(**{"dockmoat.dind": ""}))
        if status != 200:
            left.append(f"cannot list {kind}s: {status}")
            continue
        items = listed.get(key) if key and isinstance(listed, dict) else listed
        for item in items if isinstance(items, list) else []:
            labels = item.get("Labels") or {}
            instance = str(labels.get("dockmoat.dind", ""))
            mine = run.claimant and labels.get("dockmoat.dind.claimant") == run.claimant
            if mine or instance.startswith(ours) or instance in run.instances:
                names = item.get("Names") or [item.get("Name") or item.get("Id")]
                left.append(f"{kind} {str(names[0]).lstrip('/')}")
    certs = run.seen_instances()
    left += [f"certificates {i}" for i in sorted(certs)]
    meta = run.config / "contexts" / "meta"
    if meta.is_dir():
        left += [f"docker context {p.name[:12]}" for p in meta.iterdir()]
    return left


async def remove(left: list[str]) -> None:
    """Remove what `leftovers` found (after it was reported): containers, then networks
    and volumes (a network or volume is removable only once its container is gone)."""
    paths = {"container": "/containers/{}?force=1&v=1", "network": "/networks/{}"}
    paths["volume"] = "/volumes/{}"
    for kind in ("container", "network", "volume"):
        for entry in left:
            what, _, ident = entry.partition(" ")
            if what == kind:
                await engine("DELETE", paths[kind].format(ident))


def _summary(ups: list[UpResult]) -> str:
    def ms(values: list[float]) -> str:
        if not values:
            return "-"
        values = sorted(values)
        return f"p50 {values[len(values) // 2]:.1f} s, max {values[-1]:.1f} s"

    ok = [u for u in ups if u.status == 0]
    warm = [u.seconds for u in ok if u.warm]
    cold = [u.seconds for u in ok if not u.warm]
    caught = sum(u.dead_warm for u in ups)
    return (
        f"{len(ups)} `dind up` ({len(ok)} exit 0: {len(warm)} warm from the pool, {ms(warm)}; "
        f"{len(cold)} cold, {ms(cold)}); {caught} warm daemons handed out dead by the pool "
        "(killed after its check) were removed by `up` and replaced"
    )


async def fault_dind_pool(
    root: Path, duration: float, size: int, image: str, notes: list[str], failures: list[str]
) -> dict[str, object]:
    run = PoolRun(root, image, size, prefix=f"soakpool{os.getpid() % 10000}")
    status, _ = await engine("GET", f"/images/{urllib.parse.quote(image, safe='')}/json")
    if status != 200:
        failures.append(f"dind-pool: image {image} is not on the host engine ({status})")
        return {}
    t0 = time.monotonic()
    stop = t0 + duration
    run.start()
    try:
        # The pool's first warm daemon, then `up`s and kills until the end of the load.
        while time.monotonic() < t0 + duration / 2 and run.alive():
            if _idle(await metrics(run)) >= 1:
                break
            await asyncio.sleep(0.5)
        first = time.monotonic() - t0
        m0 = await metrics(run)
        if _idle(m0) < 1:
            failures.append(f"dind-pool: no warm daemon within {first:.0f} s (pool.log)")
        every = max(2.0, duration / 20)
        await asyncio.gather(
            killer(run, stop, every, notes), *(client(run, i, stop) for i in range(size))
        )
        # Refilled after the last kill?
        refill_from = time.monotonic()
        while time.monotonic() < refill_from + 120 and run.alive():
            if _idle(await metrics(run)) >= size:
                break
            await asyncio.sleep(0.5)
        refilled = time.monotonic() - refill_from
        m1 = await metrics(run)
        full = _idle(m1) >= size
    finally:
        alive = run.alive()
        code = await asyncio.to_thread(run.stop)
    left = await leftovers(run)
    if left:
        await remove(left)
    dead = [u for u in run.ups if u.status == 0 and u.answered is None]
    failed = [u for u in run.ups if u.status != 0 or u.error]
    slowest = max((u.answered for u in run.ups if u.answered is not None), default=0.0)
    served = m1.get('dockmoat_dind_pool_handouts_total{outcome="served"}', 0)
    empty = m1.get('dockmoat_dind_pool_handouts_total{outcome="empty"}', 0)
    errors = m1.get('dockmoat_dind_pool_handouts_total{outcome="error"}', 0)
    starts = m1.get('dockmoat_dind_pool_daemon_starts_total{outcome="ok"}', 0)
    start_failed = m1.get('dockmoat_dind_pool_daemon_starts_total{outcome="failed"}', 0)
    evicted = m1.get("dockmoat_dind_pool_health_evictions_total", 0)
    notes.append(
        f"dind pool (size {size}, {image}, host engine): first warm daemon after {first:.1f} s; "
        f"{run.kills} warm daemons killed in {run.kill_rounds} rounds (every {every:.0f} s, one "
        f"or all); {_summary(run.ups)}"
    )
    notes.append(
        f"pool counts: hand-outs served {served:.0f}, empty {empty:.0f}, error {errors:.0f}; "
        f"daemon starts ok {starts:.0f}, failed {start_failed:.0f} (a start whose daemon was "
        f"killed fails); health evictions {evicted:.0f}; refilled to {size} idle "
        + (f"{refilled:.1f} s after the load" if full else f"NOT within {refilled:.0f} s")
    )
    notes.append(
        f"every daemon `up` printed answered /_ping over its mTLS within {PING_BOUND:.0f} s: "
        + ("yes" if not dead else f"NO ({len(dead)} dead: {[u.name for u in dead]})")
        + f" (slowest {slowest * 1000:.0f} ms); pool stopped with {code}; "
        f"left on the engine afterwards: {left or 'nothing'}"
    )
    if dead:
        failures.append(f"dind-pool: {len(dead)} handed-out daemons did not answer /_ping")
    for u in failed[:5]:
        notes.append(f"up {u.name} exit {u.status}: {u.error}")
    if failed:
        failures.append(f"dind-pool: {len(failed)} `dind up`/`down` failed")
    if left:
        failures.append(f"dind-pool: left {left}")
    if not alive:
        failures.append("dind-pool: the pool process died during the run")
    if code != 0:
        failures.append(f"dind-pool: the pool exited {code} on SIGTERM")
    if run.kills == 0:
        failures.append("dind-pool: no warm daemon was killed (nothing tested)")
    if not full:
        failures.append("dind-pool: the pool did not fill again after the kills")
    return {
        "ups": len(run.ups),
        "warm": sum(1 for u in run.ups if u.warm),
        "kills": run.kills,
        "dead": len(dead),
        "failed": len(failed),
        "left": left,
    }
