"""Gateway benchmark: raw socket vs a path-sectioned HAProxy gate vs `dockmoat serve`.

Measures, side by side in one run: p50/p99 latency at 1 connection, requests/s
at 16 and 128 keep-alive connections (GET /_ping, GET /containers/json, and a
GET /containers/json that differs on every request),
`docker save` of a 512 MiB image, and RSS with 1,000 idle client connections.
Writes docs/bench-gateway.md. HAProxy is optional (`apt-get install haproxy`);
without it that column says so.

Run only this module with `python -m bench gateway`. Environment:

- `BENCH_SECONDS` (default 4): seconds per cell; `BENCH_ROUNDS` (default 3): interleaved
  rounds, each cell is the median over them.
- `BENCH_BEFORE=<git rev> [<git rev> ...]` (unset by default): also measure the gateway
  of another revision in the same run, for a before/after comparison on the same
  machine under the same noise. Each revision is checked out into a temporary
  `git worktree` (under the run's temporary directory, removed at the end, also on
  failure) and served by this venv's Python with that tree's `src/` first on the path
  (`PYTHONPATH=<worktree>/src python -m dockmoat serve ...`), for the same profiles
  (columns `dockmoat@<rev> (<profile>)`). The rounds interleave those columns with the
  others, and the report gets a section with this tree's figure over that revision's,
  cell by cell.
- `BENCH_AFTER=<git rev>` (unset by default): dockmoat's own columns are that revision's
  gateway, checked out the same way, instead of this tree's (whose `src/` may hold
  uncommitted work). A revision named twice gets two checkouts and two sets of
  gateways, so `BENCH_AFTER=HEAD BENCH_BEFORE="<rev> HEAD"` measures the change and,
  in the same run, the same code against itself: what ratio difference is noise.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Imported once here, so the load generator's forked workers share it and do not read
# src/ again while the run goes on (another checkout's gateway may be measured).
from dockmoat.gateway.sansio.http import ResponseFramer

ROOT = Path(__file__).resolve().parents[1]
DOCKMOAT = Path(sys.executable).parent / "dockmoat"
RAW = "/var/run/docker.sock"
BUSYBOX = "dockmoat-test/busybox:latest"
# `{n}` becomes a counter: every request differs, so no connection ever sends the same
# bytes twice and dockmoat decides each one afresh (no remembered decision; see
# docs/architecture.md). The other two paths repeat, as pollers do.
UNIQUE = "/v1.41/containers/json?limit=-{n}"
PATHS = ("/_ping", "/v1.41/containers/json", UNIQUE)


# dockmoat's columns: (label, profile, extra serve arguments). "baseline" is the
# default serve (policy and per-job tenancy). "rules+audit" is issue 3's gateway as
# that issue describes it: the endpoint and body policy, no tenancy, and the audit
# log written (to /dev/null, as the HAProxy gate's request log is).
GATEWAYS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("permissive", "permissive", ()),
    ("baseline", "baseline", ()),
    ("rules+audit", "baseline", ("--no-tenancy", "--audit-log", "/dev/null")),
)


def path_label(path: str) -> str:
    return path.replace("{n}", "<counter>")


SAVE_TIMEOUT = 120  # a 512 MiB save takes about 5 s here; a hung one must not stop the run

# The baseline of issue 3: a path-sectioned HAProxy gate, configured the way the most
# used socket proxy configures its HAProxy (facts from its published haproxy.cfg:
# `option http-server-close`, `option httplog` to stdout, one `http-request allow`
# ACL per API section matched with `path,url_dec -m reg -i`, then a final deny).
# Its log goes to /dev/null here, which is cheaper than a container's log driver.
HAPROXY_CFG = """
global
    log stdout format raw daemon info
    maxconn 4000
defaults
    mode http
    log global
    option httplog
    option dontlognull
    option http-server-close
    timeout http-request 10s
    timeout connect 10s
    timeout client 10m
    timeout server 10m
    timeout http-keep-alive 10s
    maxconn 3000
frontend gate
    bind unix@{sock} mode 660
{acls}
    http-request deny
    default_backend daemon
backend daemon
    server dockerd unix@{upstream}
"""

# The same gate tuned for speed: keep-alive to the daemon (HAProxy reuses idle server
# connections), no request log, one combined ACL. Reported so the table also shows
# where dockmoat stands against HAProxy at its fastest.
HAPROXY_FAST_CFG = """
global
    maxconn 4096
defaults
    mode http
    timeout connect 10s
    timeout client 1h
    timeout server 1h
    option http-keep-alive
frontend gate
    bind unix@{sock} mode 660
    http-request deny unless {{ path,url_dec -m reg -i ^(/v[\\d\\.]+)?/(_ping|containers|images|version|info|events|networks|volumes|exec|build|distribution|auth|system) }}
    default_backend daemon
backend daemon
    server dockerd unix@{upstream}
"""  # noqa: E501 - HAProxy's ACL line is one line

# Sections the default profile opens (dockmoat's default allows these too), GET and POST.
SECTIONS = (
    "auth", "build", "containers", "distribution", "events", "exec", "images", "info",
    "networks", "_ping", "system", "version", "volumes",
)  # fmt: skip


def haproxy_config(sock: str, upstream: str) -> str:
    acls = "\n".join(
        f"    http-request allow if {{ path,url_dec -m reg -i ^(/v[\\d\\.]+)?(/\\w+)?/{name} }}"
        for name in SECTIONS
    )
    return HAPROXY_CFG.format(sock=sock, upstream=upstream, acls=acls)


# --- load generation ---------------------------------------------------------------


async def _one_connection(path: str, sock: str, stop_at: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_unix_connection(sock)
    request = f"GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
    unique = "{n}" in path
    done = 0
    try:
        while time.perf_counter() < stop_at:
            if unique:
                request = f"GET {path.format(n=done)} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
            started = time.perf_counter()
            writer.write(request)
            # The lightest full parse available (llhttp, no per-header callbacks), so the
            # load generator takes as little of the shared CPUs as it can.
            framer = ResponseFramer()
            while not framer.done:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                framer.feed(data)
                if framer.invalid is not None or framer.status != 200:
                    raise ConnectionError(f"bad answer: {framer.invalid or framer.status}")
            latencies.append(time.perf_counter() - started)
            done += 1
    finally:
        writer.close()
    return done


def _worker(
    path: str,
    sock: str,
    connections: int,
    seconds: float,
    out: multiprocessing.Queue[tuple[int, list[float]]],
) -> None:
    import uvloop

    async def go() -> tuple[int, list[float]]:
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds
        counts = await asyncio.gather(
            *(_one_connection(path, sock, stop_at, latencies) for _ in range(connections))
        )
        return sum(counts), latencies

    total, latencies = uvloop.run(go())
    out.put((total, latencies if connections == 1 else []))


def load(path: str, sock: str, connections: int, seconds: float) -> tuple[float, list[float]]:
    """(requests/s, latencies) with `connections` keep-alive connections over 2 processes."""
    procs = 1 if connections == 1 else 2
    queue: multiprocessing.Queue[tuple[int, list[float]]] = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(
            target=_worker, args=(path, sock, connections // procs, seconds, queue)
        )
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    # A worker that died must not hang the whole run.
    results = [queue.get(timeout=seconds + 60) for _ in workers]
    for w in workers:
        w.join()
    total = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[1]]
    return total / seconds, latencies


# --- the three targets ---------------------------------------------------------------


def wait_ping(sock: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(sock)
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                if b" 200 " in s.recv(100):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{sock} did not answer")


def start_gateway(
    workdir: Path,
    profile: str,
    extra: tuple[str, ...] = (),
    name: str | None = None,
    source: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """`dockmoat serve` of this tree, or of the checkout at `source` (its `src/` first)."""
    name = name or profile
    sock = str(workdir / f"gw-{name}.sock")
    state = workdir / f"state-{name}"
    state.mkdir()
    command = [str(DOCKMOAT)]
    env = None
    if source is not None:
        command = [sys.executable, "-m", "dockmoat"]
        env = {**os.environ, "PYTHONPATH": str(source / "src")}
    proc = subprocess.Popen(
        [*command, "serve", "--listen", f"unix://{sock}", "--upstream", f"unix://{RAW}",
         "--profile", profile, "--log-level", "warning",
         "--state-db", str(state / "db"), "--control-socket", str(state / "c.sock"),
         "--jobs-dir", str(state / "jobs"), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=source,
    )  # fmt: skip
    ready(proc, sock)
    return proc, sock


def ready(proc: subprocess.Popen[bytes], sock: str) -> None:
    """Wait for `proc` to answer on `sock`; stop it if it does not (or on Ctrl-C)."""
    try:
        wait_ping(sock)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


def remove_worktree(tree: Path) -> bool:
    command = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)]
    return subprocess.run(command, check=False, capture_output=True).returncode == 0


@contextmanager
def worktrees(workdir: Path, revs: list[str]) -> Iterator[list[tuple[str, Path]]]:
    """(tag, checkout) per revision, as detached `git worktree`s under `workdir`.

    The tag is the short commit; a revision named twice gets a second checkout, tagged
    `<short>#2` (two gateways of the same code: an A/A comparison). The checkouts are
    removed on the way out, whatever happened; nothing else of the repository (its
    branches, its working tree) is touched.
    """
    trees: list[tuple[str, Path]] = []
    try:
        for rev in revs:
            short = git("rev-parse", "--short", f"{rev}^{{commit}}")
            seen = sum(1 for tag, _ in trees if tag.split("#")[0] == short)
            tag = f"{short}#{seen + 1}" if seen else short
            tree = workdir / f"rev-{tag.replace('#', '-')}"
            git("worktree", "add", "--detach", str(tree), short)
            trees.append((tag, tree))
            # That tree's package, not this one's, must be the one imported.
            found = subprocess.run(
                [sys.executable, "-c", "import dockmoat; print(dockmoat.__file__)"],
                env={**os.environ, "PYTHONPATH": str(tree / "src")}, cwd=tree,
                check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            if not Path(found).is_relative_to(tree):
                raise RuntimeError(f"{rev}: dockmoat imported from {found}, not from {tree}")
        yield trees
    finally:
        removed = [remove_worktree(tree) for _, tree in trees]
        if not all(removed):  # a checkout already gone: drop its entry from .git/worktrees
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"],
                           check=False, capture_output=True)  # fmt: skip


def start_haproxy(workdir: Path, *, fast: bool) -> tuple[subprocess.Popen[bytes], str] | None:
    if shutil.which("haproxy") is None:
        return None
    name = "haproxy-fast" if fast else "haproxy"
    sock = str(workdir / f"{name}.sock")
    cfg = workdir / f"{name}.cfg"
    text = HAPROXY_FAST_CFG.format(sock=sock, upstream=RAW) if fast else haproxy_config(sock, RAW)
    cfg.write_text(text)
    proc = subprocess.Popen(["haproxy", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ready(proc, sock)
    return proc, sock


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_rss(sock: str, pid: int, count: int = 1000) -> tuple[int, int]:
    """(RSS before, RSS with `count` idle keep-alive connections that each made one request)."""
    before = rss_kib(pid)
    conns = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        conns.append(s)
    for s in conns:
        s.settimeout(10)
        s.recv(4096)
    time.sleep(1)
    after = rss_kib(pid)
    for s in conns:
        s.close()
    return before, after


def save_seconds(sock: str, image: str, tries: int = 3) -> float:
    """The best time of `docker save` through `sock`; inf for a save that failed or hung."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        try:
            subprocess.run(["docker", "save", image], env=env, check=True,
                           stdout=subprocess.DEVNULL, timeout=SAVE_TIMEOUT)  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            print(f"docker save through {sock} failed: {error}", flush=True)
            continue
        best = min(best, time.perf_counter() - started)
    return best


def build_big_image() -> str:
    tag = f"dmbench-save-{os.getpid()}:512m"
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "Dockerfile").write_text(
            f"FROM {BUSYBOX}\nRUN head -c 536870912 /dev/urandom > /blob\n"
        )
        subprocess.run(["docker", "build", "-q", "-t", tag, ctx], check=True,
                       env={**os.environ, "DOCKER_HOST": f"unix://{RAW}"},
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return tag


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "unknown",
    )  # fmt: skip
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    engine = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, check=False)
    hv = haproxy.stdout.split("\n", 1)[0] if haproxy.returncode == 0 else "not installed"
    return (
        f"{os.cpu_count()} vCPU ({cpu}), {int(mem) // 1024} MiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()} with uvloop, dockerd {engine}, {hv}"
    )


def ratio_rows(numbers: dict[tuple[str, str], float], names: list[str]) -> list[str]:
    """dockmoat against the HAProxy gate, cell by cell (the targets of issue 3)."""
    if "HAProxy gate" not in names:
        return []
    ours = [name for name in names if name.startswith("dockmoat")]
    rows = ["", "| against the HAProxy gate | " + " | ".join(ours) + " |",
            "|---|" + "---|" * len(ours)]  # fmt: skip
    for path in PATHS:
        cells = []
        for name in ours:
            ratio = numbers[name, f"{path} p50"] / numbers["HAProxy gate", f"{path} p50"]
            cells.append(f"{ratio:.2f}x")
        rows.append(
            f"| {path_label(path)} p50 latency (target ≤ 1.00x) | " + " | ".join(cells) + " |"
        )
        for conns in (16, 128):
            base = numbers["HAProxy gate", f"{path} {conns}"]
            cells = [f"{numbers[name, f'{path} {conns}'] / base:.2f}x" for name in ours]
            rows.append(
                f"| {path_label(path)} req/s, {conns} conns (target ≥ 1.00x) | "
                + " | ".join(cells)
                + " |"
            )
    return rows


def before_after_rows(
    samples: dict[tuple[str, str], list[float]],
    numbers: dict[tuple[str, str], float],
    extra: dict[str, dict[str, float]],
    after: str,
    before: str,
) -> list[str]:
    """The gateway `after` over `before` (column prefixes), per profile and cell.

    Each cell is the ratio of the medians, then in brackets the lowest and highest ratio
    of a single round (the rounds interleave both columns, so a round's ratio compares
    figures measured moments apart).
    """
    labels = [label for label, _, _ in GATEWAYS]
    rows = ["", f"| {after} / {before} | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels)]  # fmt: skip

    def cell(new: str, old: str, key: str) -> str:
        ratio = numbers[new, key] / numbers[old, key]
        per_round = [a / b for a, b in zip(samples[new, key], samples[old, key], strict=True)]
        if len(per_round) < 2:
            return f"{ratio:.2f}x"
        return f"{ratio:.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"

    def row(metric: str, key: str) -> None:
        cells = [cell(f"{after} ({label})", f"{before} ({label})", key) for label in labels]
        rows.append(f"| {metric} | " + " | ".join(cells) + " |")

    for path in PATHS:
        row(f"{path_label(path)} p50 (lower is better)", f"{path} p50")
        row(f"{path_label(path)} p99 (lower is better)", f"{path} p99")
        for conns in (16, 128):
            row(f"{path_label(path)} req/s, {conns} conns (higher is better)", f"{path} {conns}")
    for metric, what in (("docker save", "save time, best of 5 (lower is better)"),
                         ("rss", "RSS with 1,000 idle conns (lower is better)")):  # fmt: skip
        cells = []
        for label in labels:
            new = extra[metric].get(f"{after} ({label})", float("inf"))
            old = extra[metric].get(f"{before} ({label})", float("inf"))
            done = new != float("inf") and old != float("inf")
            cells.append(f"{new / old:.2f}x" if done else "-")
        rows.append(f"| {what} | " + " | ".join(cells) + " |")
    return rows


def tree_state() -> str:
    """This tree's commit, and whether src/ differs from it."""
    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "src")
    return f"{head}, src/ {'with uncommitted changes' if dirty else 'as committed'}"


def main(argv: list[str]) -> int:
    seconds = float(os.environ.get("BENCH_SECONDS", "4"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    before_revs = os.environ.get("BENCH_BEFORE", "").replace(",", " ").split()
    after_rev = os.environ.get("BENCH_AFTER", "").strip()
    workdir = Path(tempfile.mkdtemp(prefix="dmbench-"))
    try:
        with worktrees(workdir, [after_rev, *before_revs] if after_rev else before_revs) as trees:
            after = trees[0] if after_rev else None
            return run(workdir, seconds, rounds, after, trees[1:] if after_rev else trees)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(
    workdir: Path,
    seconds: float,
    rounds: int,
    after: tuple[str, Path] | None,
    befores: list[tuple[str, Path]],
) -> int:
    """One run; dockmoat's own columns are this tree's, or the checkout `after`'s."""
    ours = "dockmoat" if after is None else f"dockmoat@{after[0]}"
    if after is not None:
        after_name = f"{after[0]}"
    elif befores:
        after_name = f"this tree ({tree_state()})"
    else:
        after_name = ""
    targets: dict[str, tuple[subprocess.Popen[bytes] | None, str]] = {"raw socket": (None, RAW)}
    started: list[subprocess.Popen[bytes]] = []
    image = None
    rows: list[str] = []
    before_after: list[str] = []
    try:
        for fast, label in ((False, "HAProxy gate"), (True, "HAProxy tuned")):
            haproxy = start_haproxy(workdir, fast=fast)
            if haproxy is not None:
                targets[label] = haproxy
                started.append(haproxy[0])
        for tag, tree in [after] if after is not None else [("", None)]:
            for label, profile, extra in GATEWAYS:
                name = f"{tag.replace('#', '-')}-{label}" if tag else label
                proc, sock = start_gateway(workdir, profile, extra, name=name, source=tree)
                targets[f"{ours} ({label})"] = (proc, sock)
                started.append(proc)
        for tag, tree in befores:
            for label, profile, extra in GATEWAYS:
                name = f"{tag.replace('#', '-')}-{label}"
                proc, sock = start_gateway(workdir, profile, extra, name=name, source=tree)
                targets[f"dockmoat@{tag} ({label})"] = (proc, sock)
                started.append(proc)
        names = list(targets)
        results: dict[str, dict[str, str]] = {name: {} for name in names}
        # Rounds interleave the targets, so a burst of other work on the machine hits
        # every column alike; each cell is the median over the rounds.
        samples: dict[tuple[str, str], list[float]] = {}
        for _round in range(rounds):
            for path in PATHS:
                for name in names:
                    sock = targets[name][1]
                    _rate, lat = load(path, sock, 1, seconds)
                    lat.sort()
                    samples.setdefault((name, f"{path} p50"), []).append(statistics.median(lat))
                    samples.setdefault((name, f"{path} p99"), []).append(
                        lat[int(len(lat) * 0.99) - 1]
                    )
                    for conns in (16, 128):
                        rate, _ = load(path, sock, conns, seconds)
                        samples.setdefault((name, f"{path} {conns}"), []).append(rate)
                print(f"round {_round + 1}/{rounds}: {path} done", flush=True)
        numbers: dict[tuple[str, str], float] = {
            key: statistics.median(values) for key, values in samples.items()
        }
        for name in names:
            for path in PATHS:
                p50, p99 = numbers[name, f"{path} p50"] * 1e6, numbers[name, f"{path} p99"] * 1e6
                results[name][f"{path_label(path)} p50/p99 µs (1 conn)"] = f"{p50:.0f} / {p99:.0f}"
                for conns in (16, 128):
                    results[name][f"{path_label(path)} req/s ({conns} conns)"] = (
                        f"{numbers[name, f'{path} {conns}']:.0f}"
                    )
        image = build_big_image()
        # Interleaved like the cells above; the best of 5 per target (a save is long
        # enough that one burst of other work decides a single try).
        saves: dict[str, float] = {name: float("inf") for name in names}
        for _try in range(5):
            for name in names:
                saves[name] = min(saves[name], save_seconds(targets[name][1], image, tries=1))
        for name in names:
            seconds_ = saves[name]
            done = seconds_ != float("inf")
            results[name]["docker save 512 MiB (s, best of 5)"] = (
                f"{seconds_:.2f}" if done else "failed"
            )
            results[name]["docker save speed vs raw socket (target ≥ 0.90x)"] = (
                f"{saves['raw socket'] / seconds_:.2f}x" if done else "-"
            )
        rss: dict[str, float] = {}
        for name in names:
            process = targets[name][0]
            if process is None:
                results[name]["RSS idle → 1,000 idle conns (MiB)"] = "n/a (dockerd)"
                continue
            idle, busy = idle_rss(targets[name][1], process.pid)
            rss[name] = busy
            results[name]["RSS idle → 1,000 idle conns (MiB)"] = (
                f"{idle / 1024:.1f} → {busy / 1024:.1f}"
            )
        metrics = list(results[names[0]])
        rows.append("| metric | " + " | ".join(names) + " |")
        rows.append("|---|" + "---|" * len(names))
        for metric in metrics:
            rows.append(
                f"| {metric} | " + " | ".join(results[n].get(metric, "-") for n in names) + " |"
            )
        rows += ratio_rows(numbers, names)
        for tag, _ in befores:
            before_after.append(f"\n### {after_name} over {tag}")
            before_after += before_after_rows(
                samples, numbers, {"docker save": saves, "rss": rss}, ours, f"dockmoat@{tag}"
            )
    finally:
        for proc in started:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if image is not None:
            subprocess.run(["docker", "rmi", "-f", image], env={**os.environ, "DOCKER_HOST": f"unix://{RAW}"},
                           stdout=subprocess.DEVNULL, check=False)  # fmt: skip
    table = "\n".join(rows)
    print(table)
    comparison = ""
    if before_after:
        comparison = (
            "\n## Before/after (`BENCH_BEFORE`)\n\n"
            "Each cell: the figure of this tree (or of `BENCH_AFTER`) over that of the "
            "revision named, the ratio of the "
            "medians, in brackets the lowest and highest ratio of one round. p50/p99 and "
            "save time: below 1.00x is faster now; req/s: above 1.00x is faster now.\n"
            + "\n".join(before_after)
            + "\n"
        )
        print(comparison)
    out = ROOT / "docs" / "bench-gateway.md"
    run_env = " ".join(
        f"{key}={os.environ[key]}"
        for key in ("BENCH_AFTER", "BENCH_BEFORE", "BENCH_SECONDS", "BENCH_ROUNDS")
        if key in os.environ
    )
    out.write_text(
        "# Gateway benchmark\n\n"
        "Run: `make bench` (or `python -m bench gateway`; `BENCH_SECONDS` and `BENCH_ROUNDS` "
        "set the seconds per cell and the rounds, `BENCH_BEFORE=<git rev>` adds the gateway "
        "of that revision as extra columns and a before/after section, `BENCH_AFTER=<git "
        "rev>` measures that revision's gateway instead of this tree's; see "
        f"`bench/gateway.py`){f', with `{run_env}`' if run_env else ''}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
        f"Machine: {machine()}.\n\n"
        f"Load: a Python/uvloop keep-alive client over unix sockets ({seconds:.0f} s per cell, "
        f"median of {rounds} interleaved rounds; 1 connection in one process, 16/128 "
        "connections over two processes), on the same machine as the daemon and the proxies, "
        "so the numbers are relative, not absolute. The client parses answers with llhttp "
        "and checks each is a 200. "
        "HAProxy gate: a path-sectioned gate configured as the most used socket proxy "
        "configures its HAProxy (`option http-server-close`, a request log, one ACL per API "
        "section; the log goes to /dev/null here). HAProxy tuned: the same gate with "
        "keep-alive to the daemon and no log. See `bench/gateway.py`. `docker save` goes "
        "through each target with the docker CLI. `/_ping` and `/containers/json` repeat "
        "the same request on each connection, as pollers do (dockmoat reuses its decision, "
        "docs/architecture.md); `?limit=-<counter>` (no limit to dockerd) makes every "
        "request differ, so each is parsed, routed and decided afresh. dockmoat columns: "
        "`permissive` (every endpoint forwarded), `baseline` (the default: policy and "
        "per-job tenancy), both without an audit log, and "
        "`rules+audit` (issue 3's gateway: `baseline --no-tenancy --audit-log /dev/null`).\n\n"
        + table
        + "\n"
        + comparison
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
