"""`python -m bench.soak`: the soak suite (docs/soak.md). Root only: it starts a private
dockerd and mounts two small tmpfs of its own; it removes all of it when it ends."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.soak import scenarios as sc
from bench.soak.ceiling import run_ceiling
from bench.soak.ceiling import table as ceiling_table
from bench.soak.client import Stats
from bench.soak.harness import (
    Dockerd,
    Serve,
    SmallDisk,
    kill_leftovers,
    remove_tree,
    scratch,
    unmount_under,
)
from bench.soak.load import Load

ROOT = Path(__file__).resolve().parents[2]

SCENARIOS: dict[str, sc.Fault | None] = {
    "load": None,
    "hostile": sc.fault_hostile,
    "dockerd-restart": functools.partial(sc.fault_dockerd, sig=signal.SIGTERM),
    "dockerd-kill": functools.partial(sc.fault_dockerd, sig=signal.SIGKILL),
    "gateway-kill": sc.fault_gateway_kill,
    "state-read-only": functools.partial(sc.fault_state, how="read-only"),
    "state-disk-full": functools.partial(sc.fault_state, how="disk full"),
    "audit-disk-full": sc.fault_audit_full,
    "dind-pool": sc.fault_dind_pool,
}
# Not a fault under the CI-day load: the ramp of one route at a time (bench/soak/ceiling.py).
CEILING = "ceiling"
ORDER = ["load", "hostile", CEILING, *list(SCENARIOS)[2:]]
CEILING_ROUTES = ("list-direct", "list", "ping", "exec")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--jobs", type=int, default=10, help="job sockets (full size: 100)")
    p.add_argument("--duration", type=float, default=60, help="seconds per scenario (full: 600)")
    p.add_argument("--idle", type=int, default=100, help="idle keep-alive connections (full: 1000)")
    p.add_argument("--streams", type=int, default=10, help="events streams (full: 50)")
    p.add_argument("--slowloris", type=int, default=50)
    p.add_argument("--connect-drop", type=int, default=2000, help="full: 10000")
    p.add_argument("--pipelined", type=int, default=2000)
    p.add_argument("--pool-size", type=int, default=2, help="dind-pool: warm daemons")
    p.add_argument("--dind-image", default="dockmoat-test/dind:latest", help="dind-pool: image")
    p.add_argument("--ceiling-step", type=float, default=5, help="ceiling: seconds per step")
    p.add_argument("--ceiling-max", type=int, default=128, help="ceiling: most connections")
    p.add_argument("--ceiling-procs", type=int, default=2, help="ceiling: generator processes")
    p.add_argument(
        "--ceiling-routes",
        default=",".join(CEILING_ROUTES),
        help="ceiling: comma-separated routes of " + ",".join(CEILING_ROUTES),
    )
    p.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(ORDER))
    p.add_argument("--out", default="", help="write the results table to this markdown file")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    p.add_argument("--note", default="", help="a line about the machine (e.g. shared, load 10)")
    args = p.parse_args(argv)
    unknown = [s for s in args.only.split(",") if s and s not in ORDER]
    if unknown:
        p.error(f"--only: no scenario {', '.join(unknown)} (there are {', '.join(ORDER)})")
    return args


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def run_scenario(
    name: str,
    fault: sc.Fault | None,
    env: sc.Env,
    args: argparse.Namespace,
    before: dict[str, dict[str, str]],
) -> dict[str, object]:
    serve = env.serve
    offset = serve.audit.stat().st_size if serve.audit.exists() else 0
    env.notes = []
    env.hostile = Stats()
    env.extra = {}
    env.failures = []
    load = Load(serve, env.jobs, args.idle, args.streams, tag=name.replace("-", "")[:8])
    metrics0 = await asyncio.to_thread(serve.metrics)
    cpu0 = serve.sample()[2]
    t0 = time.monotonic()
    task = asyncio.ensure_future(fault(env, args.duration)) if fault else None
    await load.run(args.duration, None)
    if task is not None:
        await task
    elapsed = time.monotonic() - t0
    if serve.proc is not None and serve.proc.poll() is not None:
        env.notes.append(f"the gateway EXITED during the scenario (status {serve.proc.returncode})")
        serve.proc = None
        serve.start()  # the next scenario starts from a running guard
    cpu1 = serve.sample()[2]  # after a gateway kill: the new process only
    await asyncio.sleep(1.5)  # the audit writer's batch window
    per, dropped = sc.audit_counts(serve.audit, offset)
    # The file says a gap only with the entry after it (never while the disk stays
    # full); the guard's counter says it at once: the larger of the two is the gap.
    by_metrics = sc.dropped_by_metrics(metrics0, await asyncio.to_thread(serve.metrics))
    if by_metrics is not None and by_metrics != dropped:
        env.notes.append(
            f"audit entries not written: the file counts {dropped}, /metrics {by_metrics}"
        )
        dropped = max(dropped, by_metrics)
    total = load.total()
    for job, extra in env.extra.items():
        load.stats[job].sent += extra.sent
        load.stats[job].broken += extra.broken
    # A request the client wrote may die unread (a SIGKILLed or restarted gateway, a
    # keep-alive connection closed as it was written): those are `broken` on the
    # client's side, and the only ones allowed to miss their entry.
    mismatched = {
        job: (load.stats[job].sent, load.stats[job].broken, per.get(job, 0))
        for job in env.jobs
        if not (
            load.stats[job].sent - load.stats[job].broken <= per.get(job, 0) <= load.stats[job].sent
        )
    }
    if dropped:
        # Entries the audit writer could not write (a full disk) are counted, not named:
        # then the totals must add up instead of each job's.
        sent = sum(load.stats[j].sent for j in env.jobs)
        broken = sum(load.stats[j].broken for j in env.jobs)
        audited = sum(per.get(j, 0) for j in env.jobs) + dropped
        mismatched = {} if sent - broken <= audited <= sent else {"total": (sent, broken, audited)}
    exact = all(load.stats[job].sent == per.get(job, 0) for job in env.jobs)
    if per.get("<torn line>"):
        mismatched["<torn audit lines>"] = (0, 0, per["<torn line>"])
    lost = await sc.unowned(env.dockerd, before)
    rss = [s[1] for s in load.samples]
    fds = [s[2] for s in load.samples]
    routes = {
        route: (len(v), pct(v, 0.5), pct(v, 0.99)) for route, v in sorted(total.latency.items())
    }
    result: dict[str, object] = {
        "name": name,
        "requests": total.sent,
        "rps": total.sent / elapsed,
        "days": load.days,
        "statuses": dict(sorted(total.statuses.items())),
        "broken": total.broken,
        "errors": load.errors[:5],
        "error_count": len(load.errors),
        "audit": sum(per.get(j, 0) for j in env.jobs),
        "audit_dropped": dropped,
        "audit_dropped_metrics": by_metrics,
        "mismatched": mismatched,
        "exact": exact,
        "unowned": lost,
        "rss": (
            min(rss, default=0) // 1024,
            max(rss, default=0) // 1024,
            rss[-1] // 1024 if rss else 0,
        ),
        "fds": (min(fds, default=0), max(fds, default=0), fds[-1] if fds else 0),
        "cpu_us": (cpu1 - cpu0) / max(1, total.sent) * 1e6 if cpu1 >= cpu0 else float("nan"),
        "routes": routes,
        "job_p99": pct(
            [x for k, v in total.latency.items() if k in ("containers.list",) for x in v], 0.99
        ),
        "notes": env.notes,
        "failures": list(env.failures),
        "hostile_sent": env.hostile.sent,
        "hostile_audit": sum(n for t, n in per.items() if t not in env.jobs),
    }
    if total.refused:
        env.notes.append(f"answers of 400 and above, by route: {dict(total.refused.most_common())}")
    if env.hostile.sent:
        env.notes.append(
            f"hostile listener: {env.hostile.sent} whole requests sent, "
            f"{result['hostile_audit']} audit entries (refused heads and bodies have entries too)"
        )
    print(
        f"-- {name}: {total.sent} requests in {elapsed:.0f} s ({result['rps']:.1f}/s), "
        f"days {load.days}, statuses {result['statuses']}, broken {total.broken}, "
        f"audit {result['audit']} (+{dropped} dropped), mismatched {mismatched}, "
        f"unowned {lost}, rss MiB {result['rss']}, fds {result['fds']}",
        flush=True,
    )
    for note in env.notes:
        print(f"   {note}", flush=True)
    for failure in env.failures:
        print(f"   FAILED: {failure}", flush=True)
    for err in load.errors[:3]:
        print(f"   error: {err}", flush=True)
    return result


async def main_async(args: argparse.Namespace) -> int:
    root = scratch()
    dockerd = Dockerd(root)
    state = SmallDisk(root / "state", 16)
    # Large enough for a 100-job run's audit log (about 600 bytes an entry; a 64 MiB
    # disk filled up in one); the audit-disk-full scenario fills what is left.
    audit = SmallDisk(root / "audit", 1024)
    serve = Serve(root, dockerd.url, state.path, audit.path)
    jobs = [f"soak{os.getpid() % 10000}-{i}" for i in range(args.jobs)]
    env = sc.Env(
        dockerd,
        serve,
        state,
        audit,
        jobs,
        {
            "slowloris": args.slowloris,
            "connect_drop": args.connect_drop,
            "pipelined": args.pipelined,
        },
        root=root,
        options={"pool_size": args.pool_size, "dind_image": args.dind_image},
    )
    results = []
    status = 0
    try:
        dockerd.start()
        dockerd.load_busybox()
        before = await sc.engine_inventory(dockerd)
        serve.start()
        for job in jobs:
            out = serve.job("open", job)
            if out.returncode != 0:
                raise RuntimeError(f"job open {job}: {out.stderr.strip()}")
        only = [s for s in args.only.split(",") if s] or ORDER
        ceiling: dict[str, object] | None = None
        for name in only:
            if name == CEILING:
                env.failures = []
                routes = [r for r in args.ceiling_routes.split(",") if r]
                ceiling = await run_ceiling(
                    env, args.ceiling_step, args.ceiling_max, routes, args.ceiling_procs
                )
                ceiling["failures"] = list(env.failures)
                for failure in env.failures:
                    print(f"   FAILED: {failure}", flush=True)
                continue
            results.append(await run_scenario(name, SCENARIOS[name], env, args, before))
            if args.out:  # so far: a run cut short still leaves its table
                write_table(Path(args.out), args, results, -1, {}, ceiling)
        closes = [serve.job("close", job) for job in jobs]
        closed = sum(1 for c in closes if c.returncode == 0)
        for close in closes:  # what a close kept, and why (dockerd's refusals)
            if "kept" in close.stdout.lower() or close.returncode:
                print(f"   job close: {close.stdout.strip()} {close.stderr.strip()}"[:2000])
        after = await sc.engine_inventory(dockerd)
        left = {k: sorted(set(after[k]) - set(before[k])) for k in after}
        print(f"-- job close: {closed}/{len(jobs)} closed; engine objects left: {left}")
        if args.out:
            write_table(Path(args.out), args, results, closed, left, ceiling)
        bad = (
            any(r["unowned"] or r["mismatched"] or r["failures"] for r in results)
            or any(left.values())
            or bool(ceiling and ceiling["failures"])
        )
        status = 1 if bad else 0
    finally:
        serve.stop()
        dockerd.stop()
        state.remove()
        audit.remove()
        leftovers = kill_leftovers(root)
        if leftovers:
            print(f"killed {len(leftovers)} processes the private engine left: {leftovers}")
        unmount_under(root)
        if args.keep:
            print(f"kept {root} (logs, audit image)")
        else:
            remove_tree(root)
    return status


def write_table(
    path: Path,
    args: argparse.Namespace,
    results: list[dict[str, object]],
    closed: int,
    left: dict[str, list[str]],
    ceiling: dict[str, object] | None = None,
) -> None:
    engine = subprocess.run(["dockerd", "--version"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {platform.node()}, "
        f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"private {engine} (vfs), load average at the end {load[0]:.1f}. {args.note}",
        "",
        f"Scale: {args.jobs} jobs, {args.duration:.0f} s per scenario, {args.idle} idle "
        f"keep-alive connections, {args.streams} events streams; hostile: {args.slowloris} "
        f"slowloris, {args.connect_drop} connect/drop, {args.pipelined} pipelined (in a "
        f"process of their own); dind-pool: {args.pool_size} warm daemons of "
        f"{args.dind_image} on the host engine; ceiling: {args.ceiling_step:g} s steps up to "
        f"{args.ceiling_max} connections, {args.ceiling_procs} generator processes.",
        "",
        "| scenario | requests | req/s | CI days | statuses | broken "
        "| audit entries = requests | unowned objects | RSS MiB min/max/end "
        "| fds min/max/end | CPU µs/req | p99 containers.list ms | other checks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        audit_ok = (
            ("exact" if r["exact"] else "yes, within broken")
            if not r["mismatched"]
            else f"no: {r['mismatched']}"
        )
        lines.append(
            f"| {r['name']} | {r['requests']} | {r['rps']:.1f} | {r['days']} | {r['statuses']} | "
            f"{r['broken']} | {audit_ok} (dropped {r['audit_dropped']}) | {len(r['unowned'])} | "  # type: ignore[arg-type]
            f"{'/'.join(map(str, r['rss']))} | {'/'.join(map(str, r['fds']))} | "  # type: ignore[call-overload]
            f"{r['cpu_us']:.0f} | {r['job_p99']:.0f} | "
            f"{'; '.join(r['failures']) or 'ok'} |"  # type: ignore[arg-type]
        )
    lines += [
        "",
        (
            f"`job close`: {closed}/{args.jobs} jobs closed; objects left on the engine: {left}"
            if closed >= 0
            else "`job close`: not yet (the run goes on, or was cut short)"
        ),
        "",
    ]
    if ceiling is not None:
        lines += ["**ceiling**", "", *ceiling_table(ceiling)]
        for failure in ceiling["failures"]:  # type: ignore[attr-defined]
            lines.append(f"- FAILED: {failure}")
        lines.append("")
    for r in results:
        lines.append(f"**{r['name']}**")
        lines.append("")
        for note in r["notes"]:  # type: ignore[attr-defined]
            lines.append(f"- {note}")
        if r["errors"]:
            lines.append(f"- client errors ({r['error_count']}), first: `{r['errors'][0]}`")  # type: ignore[index]
        lines.append("")
        lines.append("| route | n | p50 ms | p99 ms |")
        lines.append("|---|---|---|---|")
        for route, (n, p50, p99) in r["routes"].items():  # type: ignore[attr-defined]
            lines.append(f"| {route} | {n} | {p50:.1f} | {p99:.1f} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench.soak: root only (a private dockerd, tmpfs mounts)", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
