"""Faults and hostile clients, each run while the load runs; and the "nothing lost" checks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak.client import Broken, Conn, Stats
from bench.soak.harness import BUSYBOX, Dockerd, Serve, SmallDisk, ping
from bench.soak.load import API

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    dockerd: Dockerd
    serve: Serve
    state_disk: SmallDisk
    audit_disk: SmallDisk
    jobs: list[str]
    scale: dict[str, int]
    notes: list[str] = field(default_factory=list)
    hostile: Stats = field(default_factory=Stats)
    # Requests a fault or a hostile client sent on a job socket, per job (counted too).
    extra: dict[str, Stats] = field(default_factory=dict)
    # What a scenario found wrong beyond the audit and ownership checks (the run fails).
    failures: list[str] = field(default_factory=list)
    # The scratch folder of the run (the DinD pool's state, sockets and logs go there).
    root: Path = field(default_factory=Path)
    options: dict[str, object] = field(default_factory=dict)

    def stats(self, job: str) -> Stats:
        return self.extra.setdefault(job, Stats())


Fault = Callable[[Env, float], Awaitable[None]]


async def probe(stats: Stats, sock: str, method: str, path: str, body: object | None = None) -> str:
    conn = Conn(sock, stats, timeout=10)
    try:
        r = await conn.request(method, path, body)
        return str(r.status)
    except Broken:
        return "broken"
    finally:
        await conn.close()


async def watch(env: Env, seconds: float, what: str, job: str) -> Counter[str]:
    """Probe a job socket every 0.5 s: what a client sees during a fault."""
    seen: Counter[str] = Counter()
    end = time.monotonic() + seconds
    sock = env.serve.job_socket(job)
    while time.monotonic() < end:
        seen[await probe(env.stats(job), sock, "GET", f"{API}/containers/json")] += 1
        await asyncio.sleep(0.5)
    env.notes.append(f"{what}: GET /containers/json on a job socket answered {dict(seen)}")
    return seen


async def fault_dockerd(env: Env, duration: float, sig: int) -> None:
    await asyncio.sleep(duration / 3)
    name = "SIGKILL" if sig == signal.SIGKILL else "restart (SIGTERM)"
    stop = asyncio.to_thread(env.dockerd.stop, sig)
    watcher = asyncio.create_task(watch(env, 3, f"dockerd {name}, while down", env.jobs[0]))
    await stop
    await watcher
    await asyncio.to_thread(env.dockerd.start)
    job = env.jobs[0]
    status = await probe(env.stats(job), env.serve.job_socket(job), "GET", f"{API}/containers/json")
    env.notes.append(f"dockerd {name}: back; first request through the same guard: {status}")


async def fault_gateway_kill(env: Env, duration: float) -> None:
    await asyncio.sleep(duration / 3)
    env.serve.kill()
    await asyncio.sleep(2)
    t0 = time.monotonic()
    await asyncio.to_thread(env.serve.start)
    back = [j for j in env.jobs if ping(env.serve.job_socket(j)) == 200]
    listed = {str(j.get("job") or j.get("name")) for j in await asyncio.to_thread(env.serve.ls)}
    env.notes.append(
        f"gateway SIGKILL: restarted in {time.monotonic() - t0:.1f} s; job sockets answering "
        f"{len(back)}/{len(env.jobs)}; jobs listed {len(listed & set(env.jobs))}/{len(env.jobs)}"
    )


async def fault_state(env: Env, duration: float, how: str) -> None:
    await asyncio.sleep(duration / 3)
    if how == "read-only":
        env.state_disk.fs_error()
    else:
        env.state_disk.fill()
    sock = env.serve.job_socket(env.jobs[0])
    stats = env.stats(env.jobs[0])
    seen: Counter[str] = Counter()
    for i in range(3):
        create = await probe(
            stats,
            sock,
            "POST",
            f"{API}/containers/create?name=probe{how[0]}{i}",
            {"Image": BUSYBOX, "Cmd": ["true"]},
        )
        vol = await probe(
            stats, sock, "POST", f"{API}/volumes/create", {"Name": f"probe{how[0]}{i}"}
        )
        read = await probe(stats, sock, "GET", f"{API}/containers/json")
        seen[f"create {create}, volume create {vol}, list {read}"] += 1
        await asyncio.sleep(duration / 12)
    if how == "read-only":
        # ext4 will not go back to read-write under an open database: the operator's
        # way is to stop serve, fsck, mount and start it again (jobs come back).
        await asyncio.to_thread(env.serve.stop)
        await asyncio.to_thread(env.state_disk.repair)
        await asyncio.to_thread(env.serve.start)
    else:
        env.state_disk.unfill()
    listed = {str(j.get("job") or j.get("name")) for j in await asyncio.to_thread(env.serve.ls)}
    after = await probe(
        stats, sock, "POST", f"{API}/volumes/create", {"Name": f"probe{how[0]}after"}
    )
    env.notes.append(
        f"state db {how}: while broken {dict(seen)}; after repair volume create {after}, "
        f"jobs listed {len(listed & set(env.jobs))}/{len(env.jobs)}"
    )


async def fault_audit_full(env: Env, duration: float) -> None:
    """The audit disk full for a quarter of the run: serve's /metrics must say so while
    it lasts (the file cannot) and stop saying so once the disk is freed."""
    await asyncio.sleep(duration / 3)
    before = await asyncio.to_thread(env.serve.metrics)
    env.audit_disk.fill()
    await asyncio.sleep(duration / 4)
    full = await asyncio.to_thread(env.serve.metrics)
    env.audit_disk.unfill()
    await asyncio.sleep(2)  # the next batch is written
    after = await asyncio.to_thread(env.serve.metrics)
    seen = [(m.get(AUDIT_FAILING), m.get(AUDIT_DROPPED)) for m in (before, full, after)]
    env.notes.append(
        "audit disk full for a quarter of the run, then freed; /metrics "
        f"(audit_failing, audit_dropped_total) before {seen[0]}, while full {seen[1]}, "
        f"after {seen[2]}"
    )
    if seen[1][0] != 1 or not (seen[1][1] or 0) > (seen[0][1] or 0):
        env.failures.append(f"audit-disk-full: /metrics did not say the audit log failed: {seen}")
    if seen[2][0] != 0:
        env.failures.append(f"audit-disk-full: /metrics still says failing once freed: {seen}")


async def fault_dind_pool(env: Env, duration: float) -> None:
    """A DinD pool on the host engine, its warm daemons killed while `up`s come (dindpool.py)."""
    from bench.soak.dindpool import fault_dind_pool as run

    await run(
        env.root,
        duration,
        int(str(env.options.get("pool_size", 2))),
        str(env.options.get("dind_image", "dockmoat-test/dind:latest")),
        env.notes,
        env.failures,
    )


# Hostile clients, on the guard's main listener (a tenant of its own), while jobs run:
# in a process of their own (hostile.py), so that their cost is not counted in the
# load generator's event loop as if it were the guard's.


async def fault_hostile(env: Env, duration: float) -> None:
    scale = env.scale
    hold = duration * 0.8
    job = env.jobs[-1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bench.soak.hostile", "--listener", env.serve.sock),
        *("--job-socket", env.serve.job_socket(job), "--hold", f"{hold:.1f}"),
        *("--slowloris", str(scale["slowloris"]), "--connect-drop", str(scale["connect_drop"])),
        *("--pipelined", str(scale["pipelined"])),
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), duration + 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        env.failures.append("the hostile clients' process did not end in time (killed)")
        return
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        env.failures.append(f"the hostile clients' process ended {proc.returncode}, no result")
        return
    env.hostile.sent += int(result["hostile_sent"])
    env.hostile.broken += int(result["hostile_broken"])
    env.stats(job).sent += int(result["job_sent"])
    env.stats(job).broken += int(result["job_broken"])
    env.notes.extend(str(n) for n in result["notes"])
    env.notes.append(
        f"hostile clients ran in a process of their own (pid {proc.pid}): "
        f"{float(result['cpu_s']):.1f} s CPU"
    )


# "Nothing lost"


AUDIT_DROPPED = "dockmoat_audit_dropped_total"
AUDIT_FAILING = "dockmoat_audit_failing"


def dropped_by_metrics(before: dict[str, float], after: dict[str, float]) -> int | None:
    """Audit entries the guard counted as not written between two scrapes of its
    /metrics; None when either scrape failed or the counter went back (the guard was
    restarted in between: a new process counts from 0)."""
    if AUDIT_DROPPED not in before or AUDIT_DROPPED not in after:
        return None
    gap = after[AUDIT_DROPPED] - before[AUDIT_DROPPED]
    return int(gap) if gap >= 0 else None


def audit_counts(path: Path, offset: int) -> tuple[Counter[str], int]:
    """Audit entries per tenant from byte `offset` on, and the entries reported dropped."""
    per: Counter[str] = Counter()
    dropped = 0
    with path.open("rb") as f:
        f.seek(offset)
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                per["<torn line>"] += 1
                continue
            per[str(entry.get("tenant"))] += 1
            dropped += int(entry.get("audit_dropped_before") or 0)
    return per, dropped


async def engine_inventory(dockerd: Dockerd) -> dict[str, dict[str, str]]:
    """Every container, volume and network on the private engine, with its tenant label."""
    conn = Conn(dockerd.sock, Stats())
    out: dict[str, dict[str, str]] = {"container": {}, "volume": {}, "network": {}}
    try:
        for c in (await conn.request("GET", "/containers/json?all=1")).json():  # type: ignore[attr-defined]
            out["container"][c["Id"]] = (c.get("Labels") or {}).get("dockmoat.tenant", "")
        vols = (await conn.request("GET", "/volumes")).json()
        for v in vols["Volumes"] or []:  # type: ignore[index]
            out["volume"][v["Name"]] = (v.get("Labels") or {}).get("dockmoat.tenant", "")
        for n in (await conn.request("GET", "/networks")).json():  # type: ignore[attr-defined]
            if n["Name"] not in ("bridge", "host", "none"):
                out["network"][n["Name"]] = (n.get("Labels") or {}).get("dockmoat.tenant", "")
    finally:
        await conn.close()
    return out


async def unowned(dockerd: Dockerd, before: dict[str, dict[str, str]]) -> list[str]:
    """Objects on the engine that were not there before and carry no job's label."""
    now = await engine_inventory(dockerd)
    return [
        f"{kind} {name}"
        for kind, items in now.items()
        for name, tenant in items.items()
        if not tenant and name not in before[kind]
    ]


def signal_name(sig: int) -> str:
    return signal.Signals(sig).name


def rss_mib(kib: int) -> float:
    return kib / 1024


def exists(path: str) -> bool:
    return os.path.exists(path)
