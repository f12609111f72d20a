"""The ceiling on this machine: ramp the concurrency of one cheap route until its
throughput stops rising, and say what was busy (`--only ceiling`).

Each step runs a load generator in a process of its own (`python -m bench.soak.ceiling
worker`): C keep-alive connections spread over the job sockets, each sending one route
back to back for `--ceiling-step` seconds. Meanwhile the CPU time of the guard, the
private dockerd, its containerd and the generator is read from /proc (and the
machine's from /proc/stat), so the table says which of them had a core to itself when
the curve went flat. The routes:

- `containers/json direct`: the same requests on the private dockerd's own socket
  (no guard): what the daemon and the generator give without the guard;
- `containers/json`: through the guard on the job sockets (the guard filters the
  daemon's list to the job's containers);
- `_ping`: through the guard;
- `exec`: exec create + start (output read to the end) in one running container per
  job socket (at most 8): the daemon's and runc's work dominates.

The ramp goes 1, 2, 4, ... up to `--ceiling-max` and stops when two steps in a row do
not beat the best by 5 %. Every request through the guard must have its audit entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak.client import Broken, Conn, Stats
from bench.soak.harness import BUSYBOX
from bench.soak.scenarios import Env, audit_counts
from dockmoat.gateway.sansio.http import ResponseFramer

API = "/v1.47"
ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------- the worker process


async def _lean(sock: str, path: str, end: float, stats: Stats, lat: list[float]) -> None:
    """Back-to-back GETs on one keep-alive connection, framed by llhttp (the lightest
    parse there is here, so the generator takes as little of the shared cores as it can)."""
    reader, writer = await asyncio.open_unix_connection(sock)
    request = f"GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
    try:
        while time.monotonic() < end:
            t0 = time.monotonic()
            writer.write(request)
            stats.sent += 1
            framer = ResponseFramer()
            while not framer.done:
                data = await reader.read(65536)
                if not data or framer.invalid is not None:
                    stats.broken += 1
                    raise Broken("closed")
                framer.feed(data)
            stats.statuses[framer.status or 0] += 1
            lat.append(time.monotonic() - t0)
    finally:
        writer.close()


async def _exec(conn: Conn, container: str) -> None:
    r = await conn.request(
        "POST",
        f"{API}/containers/{container}/exec",
        {"Cmd": ["true"], "AttachStdout": True},
        route="exec create",
    )
    eid = str(r.json()["Id"])  # type: ignore[index]
    start = Conn(conn.sock, conn.stats)
    await start.request(
        "POST", f"{API}/exec/{eid}/start", {"Detach": False}, "exec start", raw_stream=True
    )


async def _worker(args: argparse.Namespace) -> dict[str, object]:
    socks = args.socks.split(",")
    containers = args.containers.split(",") if args.containers else [""] * len(socks)
    stats = {s: Stats() for s in socks}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    end = time.monotonic() + args.seconds
    path = "/_ping" if args.route == "ping" else f"{API}/containers/json"

    async def loop(i: int) -> None:
        sock = socks[(i + args.offset) % len(socks)]
        if args.route != "exec":
            while time.monotonic() < end:
                try:
                    await _lean(sock, path, end, stats[sock], latencies)
                except (Broken, OSError) as e:
                    errors[type(e).__name__] += 1
                    await asyncio.sleep(0.05)
            return
        conn = Conn(sock, stats[sock], timeout=30)
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                await _exec(conn, containers[(i + args.offset) % len(socks)])
            except (Broken, KeyError, TypeError, ValueError) as e:
                errors[type(e).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            latencies.append(time.monotonic() - t0)
        await conn.close()

    await asyncio.gather(*(loop(i) for i in range(args.conc)))
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    statuses: Counter[int] = Counter()
    for s in stats.values():
        statuses.update(s.statuses)
    step = max(1, len(latencies) // 2000)
    return {
        "ops": len(latencies),  # answered requests (exec: create and start)
        "sent": {s: st.sent for s, st in stats.items()},
        "broken": {s: st.broken for s, st in stats.items()},
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "latencies": [round(x, 6) for x in sorted(latencies)[::step]],
        "cpu_s": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
    }


def worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak.ceiling worker")
    p.add_argument("--socks", required=True)
    p.add_argument("--containers", default="")
    p.add_argument("--route", required=True, choices=["list", "list-direct", "ping", "exec"])
    p.add_argument("--conc", type=int, required=True)
    p.add_argument("--offset", type=int, default=0, help="first socket of this worker")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--start-at", type=float, default=0.0, help="wall-clock time to begin")
    args = p.parse_args(argv)
    try:
        import uvloop

        result = uvloop.run(_worker(args))
    except ImportError:
        result = asyncio.run(_worker(args))
    # The event loop may have left stdout non-blocking: a write into a full pipe would
    # then stop at 64 KiB (a full run lost one step's result that way).
    os.set_blocking(sys.stdout.fileno(), True)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# ----------------------------------------------------------------- the driver


def cpu_ticks(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


@dataclass
class Step:
    route: str
    conc: int
    ops_s: float
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float]  # percent of one core, per process; "machine" in % of all cores
    statuses: dict[str, int]
    errors: dict[str, int]


@dataclass
class Ramp:
    route: str
    steps: list[Step] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        return max(self.steps, key=lambda s: s.ops_s, default=None)


async def step(
    route: str,
    socks: list[str],
    containers: list[str],
    conc: int,
    seconds: float,
    pids: dict[str, int | None],
    procs: int,
) -> tuple[Step, dict[str, int], dict[str, int]]:
    """One step: `conc` connections over `procs` generator processes (fewer when `conc`
    is smaller), all starting at the same wall-clock time."""
    start_at = time.time() + 1.5  # the workers' interpreters start meanwhile
    shares = [conc // procs + (1 if i < conc % procs else 0) for i in range(procs)]
    workers = []
    offset = 0
    for share in (s for s in shares if s):
        workers.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "bench.soak.ceiling", "worker", "--socks", ",".join(socks)),
                *("--containers", ",".join(containers), "--route", route),
                *("--conc", str(share), "--offset", str(offset), "--seconds", str(seconds)),
                *("--start-at", f"{start_at:.3f}"),
                cwd=str(ROOT),
                stdout=asyncio.subprocess.PIPE,
            )
        )
        offset += share
    await asyncio.sleep(max(0.0, start_at - time.time()))
    before = {name: cpu_ticks(pid) for name, pid in pids.items()}
    busy0, total0 = machine_ticks()
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    after = {name: cpu_ticks(pid) for name, pid in pids.items()}
    busy1, total1 = machine_ticks()
    wall = time.monotonic() - t0
    results = []
    for proc in workers:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 120)
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    cpu = {name: (after[name] - before[name]) / TICK / wall * 100 for name in pids}
    cpu["generator"] = sum(float(r["cpu_s"]) for r in results) / seconds * 100
    cores = os.cpu_count() or 1
    cpu["machine"] = (busy1 - busy0) / max(1, total1 - total0) * 100 * cores
    latencies = sorted(x for r in results for x in r["latencies"])

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        )

    sent: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        sent.update(r["sent"])
        broken.update(r["broken"])
        statuses.update(r["statuses"])
        errors.update(r["errors"])
    ops = sum(int(r["ops"]) for r in results)
    return (
        Step(route, conc, ops / seconds, pct(0.5), pct(0.99), cpu, dict(statuses), dict(errors)),
        dict(sent),
        dict(broken),
    )


async def ramp(
    route: str,
    socks: list[str],
    containers: list[str],
    pids: dict[str, int | None],
    seconds: float,
    most: int,
    sent: Counter[str],
    broken: Counter[str],
    procs: int = 2,
) -> Ramp:
    result = Ramp(route)
    conc, stalls, best = 1, 0, 0.0
    while conc <= most:
        s, step_sent, step_broken = await step(route, socks, containers, conc, seconds, pids, procs)
        sent.update(step_sent)
        broken.update(step_broken)
        result.steps.append(s)
        cpu = ", ".join(f"{k} {v:.0f}%" for k, v in s.cpu.items())
        print(
            f"   ceiling {route} x{conc}: {s.ops_s:.0f}/s p50 {s.p50_ms:.1f} ms "
            f"p99 {s.p99_ms:.1f} ms; cpu {cpu}",
            flush=True,
        )
        if s.ops_s > best * 1.05:
            best, stalls = s.ops_s, 0
        else:
            stalls += 1
            if stalls >= 2:
                break
        conc *= 2
    return result


def rest(s: Step) -> float:
    """The machine's busy CPU that none of the four measured processes used: runc and
    the containerd shims (exec), the soak's own driver, other sessions' work."""
    measured = sum(s.cpu.get(k, 0.0) for k in ("guard", "dockerd", "containerd", "generator"))
    return max(0.0, s.cpu.get("machine", 0.0) - measured)


def bound_by(s: Step) -> str:
    """What was saturated at step `s`: a process near a full core, or the machine."""
    cores = os.cpu_count() or 1
    parts = []
    for name in ("guard", "dockerd", "containerd", "generator"):
        if s.cpu.get(name, 0.0) >= 85:
            parts.append(f"{name} {s.cpu[name]:.0f}% of a core")
    if s.cpu.get("machine", 0.0) >= 90 * cores:
        parts.append(f"machine {s.cpu['machine']:.0f}% of {cores * 100}%")
    return ", ".join(parts) or "nothing at a full core (latency-bound: more concurrency needed)"


async def run_ceiling(
    env: Env, seconds: float, most: int, routes: list[str], procs: int = 2
) -> dict[str, object]:
    """Every route's ramp, and the audit check of the requests sent through the guard."""
    serve, dockerd = env.serve, env.dockerd
    offset = serve.audit.stat().st_size if serve.audit.exists() else 0
    containerd = dockerd.root / "exec" / "containerd" / "containerd.pid"
    pids: dict[str, int | None] = {
        "guard": serve.pid,
        "dockerd": dockerd.proc.pid if dockerd.proc else None,
        "containerd": int(containerd.read_text()) if containerd.exists() else None,
    }
    by_sock = {serve.job_socket(j): j for j in env.jobs}
    sent: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    setup = {j: Stats() for j in env.jobs}
    # One running container per job socket for `exec` (at most 8 jobs).
    exec_jobs = env.jobs[: min(8, len(env.jobs))]
    containers: dict[str, str] = {}
    ramps: list[Ramp] = []
    try:
        if "exec" in routes:
            for job in exec_jobs:
                conn = Conn(serve.job_socket(job), setup[job])
                r = await conn.request(
                    "POST",
                    f"{API}/containers/create?name=ceiling{env.jobs.index(job)}",
                    {"Image": BUSYBOX, "Cmd": ["sleep", "3600"]},
                )
                if r.status == 201:
                    cid = str(r.json()["Id"])  # type: ignore[index]
                    await conn.request("POST", f"{API}/containers/{cid}/start")
                    containers[job] = cid
                await conn.close()
        for route in routes:
            if route == "list-direct":
                socks, cids = [dockerd.sock], []
            elif route == "exec":
                socks = [serve.job_socket(j) for j in containers]
                cids = [containers[j] for j in containers]
                if not socks:
                    env.failures.append("ceiling: no container for exec was created")
                    continue
            else:
                socks, cids = list(by_sock), []
            try:
                ramps.append(
                    await ramp(route, socks, cids, pids, seconds, most, sent, broken, procs)
                )
            except (ValueError, IndexError, KeyError, TimeoutError) as e:
                env.failures.append(f"ceiling {route}: the generator gave no result ({e!r})")
    finally:
        for job, cid in containers.items():
            conn = Conn(serve.job_socket(job), setup[job])
            try:
                await conn.request("DELETE", f"{API}/containers/{cid}?force=1")
            except Broken:
                env.failures.append(f"ceiling: container {cid[:12]} of {job} not removed")
            await conn.close()
    await asyncio.sleep(1.5)  # the audit writer's batch window
    per, dropped = audit_counts(serve.audit, offset)
    mismatched = {}
    for sock, job in by_sock.items():
        want = sent[sock] + setup[job].sent
        lost = broken[sock] + setup[job].broken
        if not want - lost <= per.get(job, 0) <= want:
            mismatched[job] = (want, lost, per.get(job, 0))
    if mismatched or dropped:
        env.failures.append(f"ceiling: audit entries != requests: {mismatched} (dropped {dropped})")
    return {
        "ramps": ramps,
        "requests": sum(sent[s] for s in by_sock) + sum(s.sent for s in setup.values()),
        "audit": sum(per.get(j, 0) for j in env.jobs),
        "mismatched": mismatched,
        "seconds": seconds,
    }


def table(result: dict[str, object]) -> list[str]:
    """The ceiling's markdown: one row per step, and each route's best with its bound."""
    ramps: list[Ramp] = result["ramps"]  # type: ignore[assignment]
    lines = [
        f"Each step {result['seconds']:.0f} s; CPU in % of one core over the step "
        f"(`machine`: all cores, {(os.cpu_count() or 1) * 100}% = every core busy; `rest`: "
        "the machine's busy time none of the four used: runc and the shims for exec, the "
        "soak's driver, other sessions' work on a shared machine). "
        f"{result['requests']} requests through the guard, {result['audit']} audit entries.",
        "",
        "| route | connections | ops/s | p50 ms | p99 ms | guard % | dockerd % "
        "| containerd % | generator % | rest % | machine % | statuses |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ramps:
        for s in r.steps:
            c = s.cpu
            lines.append(
                f"| {s.route} | {s.conc} | {s.ops_s:.0f} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | "
                f"{c['guard']:.0f} | {c['dockerd']:.0f} | {c['containerd']:.0f} | "
                f"{c['generator']:.0f} | {rest(s):.0f} | {c['machine']:.0f} | {s.statuses}"
                + (f" errors {s.errors}" if s.errors else "")
                + " |"
            )
    lines.append("")
    for r in ramps:
        best = r.best
        if best is not None:
            lines.append(
                f"- **{r.route}**: best {best.ops_s:.0f}/s at {best.conc} connections "
                f"(p99 {best.p99_ms:.0f} ms); saturated there: {bound_by(best)}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return worker_main(argv[1:])
    print("usage: python -m bench.soak.ceiling worker ... (the soak runs it)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
