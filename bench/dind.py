"""Benchmarks of `dockmoat dind` on this machine (prints a markdown table).

    .venv/bin/python -m bench            # all benchmarks (make bench)
    .venv/bin/python -m bench dind       # only these
    .venv/bin/python -m bench.dind pool-cache   # only cold/warm/warm+cache `up` vs the floors
    .venv/bin/python -m bench.dind cold         # only cold `up` (whole process) vs the floors

The floor for cold `up` (issue 24's "fair floor"): the same DinD image started by
hand with `dockerd --tlsverify` on certificates made beforehand, its port
published on 127.0.0.1 as dockmoat publishes it, polled until `/_ping` answers
over mutual TLS (`bench_fair`). The bare unix-socket start (`bench_bare`, no TLS,
no network) stays as a reference row: it is faster than any TLS daemon can be.

Needs the local engine and `dockmoat-test/dind:latest` (scripts/test-engine up).
Everything it creates carries a `dmbench-` name and is removed at the end.
"""

from __future__ import annotations

import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import docker

from dockmoat.dind import certs, context, pool_client, probe
from dockmoat.dind.info import DindInfo
from dockmoat.dind.manager import DindManager
from dockmoat.dind.pool import PoolService
from dockmoat.dind.spec import DindOptions

IMAGE = os.environ.get("DOCKMOAT_BENCH_DIND_IMAGE", "dockmoat-test/dind:latest")
BUSYBOX = "dockmoat-test/busybox:latest"
RUNS = int(os.environ.get("DOCKMOAT_BENCH_RUNS", "5"))
DOCKERFILE = """\
FROM dockmoat-test/busybox:latest
RUN for i in $(seq 1 200); do echo $i >> /a; done
RUN sleep 1 && cp /a /b
RUN sleep 1 && cat /a /b > /c
RUN sleep 1 && wc -l /c > /d
CMD ["cat", "/d"]
"""


def _name() -> str:
    return f"dmbench-{secrets.token_hex(4)}"


def _timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _fmt(samples: list[float]) -> str:
    if not samples:
        return "-"
    p50 = statistics.median(samples)
    unit, scale = ("ms", 1000.0) if p50 < 1 else ("s", 1.0)
    return f"{p50 * scale:.3g} {unit} (min {min(samples) * scale:.3g}, n={len(samples)})"


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    engine = docker.from_env(version="auto").version().get("Version", "?")
    return (
        f"{os.cpu_count()} vCPU {cpu}, {mem:.0f} GiB RAM, Linux {platform.release()}, "
        f"Docker engine {engine}, Python {platform.python_version()}"
    )


# ------------------------------------------------------------------ certificates


def bench_certs() -> tuple[list[float], list[float], list[float]]:
    ca = certs.new_ca()
    ecdsa = [
        _timed(lambda: certs.issue_daemon_certs(ca, "bench", ["docker"], ["172.18.0.2"]))
        for _ in range(50)
    ]
    with_ca = [
        _timed(
            lambda: certs.issue_daemon_certs(certs.new_ca(), "bench", ["docker"], ["172.18.0.2"])
        )
        for _ in range(20)
    ]
    rsa = [_timed(_official_rsa_recipe) for _ in range(3)]
    return ecdsa, with_ca, rsa


def _official_rsa_recipe() -> None:
    """What docker:dind's entrypoint runs: CA, server and client with RSA-4096 via openssl."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)

        def sh(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=t, check=True, capture_output=True)

        sh("genrsa", "-out", "ca-key.pem", "4096")
        sh(
            "req",
            "-new",
            "-key",
            "ca-key.pem",
            "-x509",
            "-days",
            "825",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=docker:dind CA",
        )
        for role, ext in (("server", "serverAuth"), ("client", "clientAuth")):
            sh("genrsa", "-out", f"{role}-key.pem", "4096")
            sh(
                "req",
                "-new",
                "-key",
                f"{role}-key.pem",
                "-out",
                f"{role}.csr",
                "-subj",
                f"/CN=docker:dind {role}",
            )
            (t / f"{role}.cnf").write_text(f"[x509_exts]\nextendedKeyUsage = {ext}\n")
            sh(
                "x509",
                "-req",
                "-in",
                f"{role}.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                f"{role}.pem",
                "-days",
                "825",
                "-extfile",
                f"{role}.cnf",
                "-extensions",
                "x509_exts",
            )


# ------------------------------------------------------------------ cold start


def bench_bare(client: docker.DockerClient, tmp: Path, tcp: bool = False) -> float:
    """A bare `docker run --privileged <dind image> dockerd ...` until /_ping answers.

    Default: dockerd on a unix socket bind-mounted to the host (no TLS, no network
    set-up, no certificates: the fastest a DinD daemon can answer). `tcp=True`:
    plain TCP without TLS, as the seed's "DinD without TLS" example, on which
    dockerd >= 20.10 sleeps ~15 s on purpose before serving.
    """
    api = client.api
    sock_dir = Path(tempfile.mkdtemp(prefix="dmbench-sock-", dir=tmp))
    start = time.perf_counter()
    if tcp:
        container = api.create_container(
            IMAGE,
            command=["dockerd", "--host=tcp://0.0.0.0:2375"],
            name=_name(),
            ports=[2375],
            host_config=api.create_host_config(
                privileged=True, port_bindings={2375: ("127.0.0.1",)}
            ),
        )
    else:
        container = api.create_container(
            IMAGE,
            command=["dockerd", "--host=unix:///dmbench/docker.sock"],
            name=_name(),
            host_config=api.create_host_config(
                privileged=True, binds={str(sock_dir): {"bind": "/dmbench", "mode": "rw"}}
            ),
        )
    try:
        api.start(container)
        if tcp:
            port = int(
                api.inspect_container(container)["NetworkSettings"]["Ports"]["2375/tcp"][0][
                    "HostPort"
                ]
            )
            url = f"http://127.0.0.1:{port}/_ping"
        while not (_http_ping(url) if tcp else _unix_ping(sock_dir / "docker.sock")):
            time.sleep(0.02)
        return time.perf_counter() - start
    finally:
        api.remove_container(container, force=True, v=True)


def fair_certs(tmp: Path) -> tuple[Path, Path]:
    """Server and client certificate directories for `bench_fair`, made before any timer.

    dockmoat's own ECDSA certificates (the server's SANs include 127.0.0.1).
    """
    issued = certs.issue_daemon_certs(certs.new_ca(), "bench-fair", ["docker"], [])
    base = Path(tempfile.mkdtemp(prefix="dmbench-fair-", dir=tmp))
    server, client = base / "server", base / "client"
    for directory, ca, pair in (
        (server, issued.server_ca_pem, issued.server),
        (client, issued.client_ca_pem, issued.client),
    ):
        directory.mkdir()
        (directory / "ca.pem").write_bytes(ca)
        (directory / "cert.pem").write_bytes(pair.cert_pem)
        (directory / "key.pem").write_bytes(pair.key_pem)
        (directory / "key.pem").chmod(0o600)
    return server, client


def bench_fair(client: docker.DockerClient, server_dir: Path, client_dir: Path) -> float:
    """The fair floor: `docker run --privileged -d -p 127.0.0.1::2376 <dind image> dockerd
    --host=tcp://0.0.0.0:2376 --tlsverify --tlscacert/--tlscert/--tlskey` on certificates
    made beforehand (bind-mounted read-only), until `/_ping` answers over mutual TLS.
    """
    api = client.api
    tls = probe.tls_context(client_dir)
    start = time.perf_counter()
    container = api.create_container(
        IMAGE,
        command=[
            "dockerd",
            "--host=tcp://0.0.0.0:2376",
            "--tlsverify",
            "--tlscacert=/certs/server/ca.pem",
            "--tlscert=/certs/server/cert.pem",
            "--tlskey=/certs/server/key.pem",
        ],
        name=_name(),
        ports=[2376],
        environment={"DOCKER_TLS_CERTDIR": ""},
        host_config=api.create_host_config(
            privileged=True,
            port_bindings={2376: ("127.0.0.1",)},
            binds={str(server_dir): {"bind": "/certs/server", "mode": "ro"}},
        ),
    )
    try:
        api.start(container)
        port = int(
            api.inspect_container(container)["NetworkSettings"]["Ports"]["2376/tcp"][0]["HostPort"]
        )
        while not probe.ping("127.0.0.1", port, tls):
            time.sleep(0.02)
        return time.perf_counter() - start
    finally:
        api.remove_container(container, force=True, v=True)


def _http_ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.read() == b"OK")
    except OSError:
        return False


def _unix_ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            return sock.recv(4096).endswith(b"OK")
    except OSError:
        return False


def bench_cold(manager: DindManager) -> float:
    name = _name()
    start = time.perf_counter()
    manager.up(name, DindOptions(image=IMAGE))
    elapsed = time.perf_counter() - start
    manager.down(name)
    return elapsed


def _cli_env(manager: DindManager, tmp: Path) -> dict[str, str]:
    """The environment of timed `dockmoat` processes: this bench's state, a private
    bytecode cache (as an installed package has; the bench writes none into the tree)."""
    return {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "DOCKMOAT_STATE_DIR": str(manager.state.root),
        "DOCKER_CONFIG": str(manager.docker_config),
        "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
    }


def _cli_up(env: dict[str, str], name: str, *args: str) -> float:
    """One whole `dockmoat dind up NAME` process, Python start included."""
    argv = ["dind", "up", name, "--image", IMAGE, "-q", *args]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dockmoat", *argv], check=True, capture_output=True, env=env
    )
    elapsed = time.perf_counter() - start
    assert b"DOCKER_HOST=" in done.stdout, done.stdout
    return elapsed


def bench_cold_cli(
    client: docker.DockerClient, manager: DindManager, tmp: Path, runs: int
) -> list[tuple[str, str]]:
    """Whole `dockmoat dind up --no-pool` processes against the fair floor and the bare
    start, interleaved round by round (one untimed round first fills the bytecode cache)."""
    env = _cli_env(manager, tmp)
    server_dir, client_dir = fair_certs(tmp)
    bare: list[float] = []
    fair: list[float] = []
    cold: list[float] = []
    for round_ in range(runs + 1):
        floor = bench_bare(client, tmp)
        fair_floor = bench_fair(client, server_dir, client_dir)
        name = _name()
        try:
            cold_time = _cli_up(env, name, "--no-pool")
        finally:
            manager.down(name)
        if round_ > 0:
            bare.append(floor)
            fair.append(fair_floor)
            cold.append(cold_time)
    return _cold_rows(bare, fair, cold)


def _cold_rows(bare: list[float], fair: list[float], cold: list[float]) -> list[tuple[str, str]]:
    fair_ratio = statistics.median(cold) / statistics.median(fair)
    bare_ratio = statistics.median(cold) / statistics.median(bare)
    return [
        (
            "reference: bare `docker run --privileged` DinD until /_ping (unix socket, no TLS)",
            _fmt(bare),
        ),
        (
            "fair floor: `docker run --privileged` DinD, `dockerd --tlsverify` on certificates "
            "made beforehand, until /_ping over mTLS (127.0.0.1 port)",
            _fmt(fair),
        ),
        ("cold `dockmoat dind up --no-pool`, whole process", _fmt(cold)),
        ("cold `up` process / fair floor (p50 ratio; target <= 1.3)", f"{fair_ratio:.2f}x"),
        ("cold `up` process / bare unix-socket start (p50 ratio, reference)", f"{bare_ratio:.2f}x"),
    ]


# ------------------------------------------------------------------ warm pool


def bench_warm(manager: DindManager, tmp: Path) -> tuple[list[float], list[float], list[float]]:
    """Warm-pool `up`: in-process API, and whole `dockmoat dind up` processes.

    The process is timed twice: with a bytecode cache, as an installed package
    runs (pip and distro packages compile .pyc files at install), and without one
    (PYTHONDONTWRITEBYTECODE=1 and no .pyc files, as in this sandbox's venv), where
    every import compiles its module from source first.
    """
    sock = tmp / "pool.sock"
    service = PoolService(manager, DindOptions(image=IMAGE), 2, sock)
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    api_times: list[float] = []
    cached_times: list[float] = []
    source_times: list[float] = []
    names: list[str] = []
    shape = {**DindOptions(image=IMAGE).shape(), "host": ""}
    base_env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "DOCKMOAT_STATE_DIR": str(manager.state.root),
        "DOCKER_CONFIG": str(manager.docker_config),
    }
    # A private cache directory: the bench writes no .pyc files into the tree.
    cached_env = {**base_env, "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
    source_env = {
        **base_env,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPYCACHEPREFIX": str(tmp / "none"),
    }

    def take_in_process(name: str) -> None:
        reply = pool_client.take(sock, name, shape)
        assert reply is not None, "the pool had nothing ready"
        info = DindInfo.from_json(reply)
        assert probe.ping("127.0.0.1", info.port, probe.tls_context(info.cert_path))
        context.write(
            manager.docker_config, info.context, info.host_url, info.instance, info.cert_path
        )

    def take_process(name: str, env: dict[str, str]) -> None:
        argv = ["dind", "up", name, "--image", IMAGE, "--pool-socket", str(sock), "-q"]
        done = subprocess.run(
            [sys.executable, "-m", "dockmoat", *argv], check=True, capture_output=True, env=env
        )
        assert b"DOCKER_HOST=" in done.stdout, done.stdout

    # (what to time, where the time goes); the first, untimed, fills the bytecode cache.
    rounds: list[tuple[Callable[[str], None], list[float] | None]] = [
        (lambda n: take_process(n, cached_env), None)
    ]
    for _ in range(RUNS):
        rounds += [
            (take_in_process, api_times),
            (lambda n: take_process(n, cached_env), cached_times),
            (lambda n: take_process(n, source_env), source_times),
        ]
    try:
        for run, times in rounds:
            deadline = time.monotonic() + 120
            while service.ready_count() < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            name = _name()
            names.append(name)
            start = time.perf_counter()
            run(name)
            if times is not None:
                times.append(time.perf_counter() - start)
    finally:
        service.stop()
        thread.join(180)
        for name in names:
            try:
                manager.down(name)
            except Exception as error:
                print(f"bench: cannot remove {name}: {error}", file=sys.stderr)
    return api_times, cached_times, source_times


# ------------------------------------------------------------------ builds


def _build(manager: DindManager, info: DindInfo) -> float:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
        **info.env(),
        "DOCKER_BUILDKIT": "0",
    }
    start = time.perf_counter()
    subprocess.run(
        ["docker", "build", "-t", "dmbench:1", "-"],
        input=DOCKERFILE,
        text=True,
        check=True,
        capture_output=True,
        env=env,
    )
    return time.perf_counter() - start


def bench_builds(manager: DindManager) -> tuple[float, float]:
    """Second build of the Dockerfile in a fresh daemon, without and with --cache."""
    # Without a cache every daemon starts empty: its "second" build is a first build.
    name = _name()
    info = manager.up(name, DindOptions(image=IMAGE, preload=(BUSYBOX,)))
    _build(manager, info)
    manager.down(name)
    name = _name()
    info = manager.up(name, DindOptions(image=IMAGE, preload=(BUSYBOX,)))
    without = _build(manager, info)
    manager.down(name)

    key = f"dmbench-{secrets.token_hex(4)}"
    try:
        name = _name()
        info = manager.up(name, DindOptions(image=IMAGE, preload=(BUSYBOX,), cache=key))
        _build(manager, info)
        manager.down(name)
        name = _name()
        info = manager.up(name, DindOptions(image=IMAGE, cache=key))
        with_cache = _build(manager, info)
        manager.down(name)
    finally:
        try:
            manager.api.remove_volume(f"dockmoat-dind-cache-{key}")
        except docker.errors.APIError as error:
            print(f"bench: cannot remove the cache volume: {error}", file=sys.stderr)
    return without, with_cache


# ------------------------------------------------------------------ warm pools with caches


def bench_pool_cache(
    client: docker.DockerClient, manager: DindManager, tmp: Path, runs: int
) -> list[tuple[str, str]]:
    """Whole `dockmoat dind up` processes, interleaved round by round with the fair floor
    and the bare DinD start: cold (`--no-pool`), warm (a plain pool daemon) and warm+cache
    (`--cache KEY` from the pool's daemon on KEY's volume); on each warm+cache daemon
    after the first, the second build of DOCKERFILE (classic builder) is timed too.
    """
    key = f"dmbench-{secrets.token_hex(4)}"
    sock = tmp / "pool-cache.sock"
    service = PoolService(manager, DindOptions(image=IMAGE), 1, sock, cache_keys=(key,))
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    env = _cli_env(manager, tmp)
    server_dir, client_dir = fair_certs(tmp)
    bare: list[float] = []
    fair: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    cached: list[float] = []
    cached_api: list[float] = []
    first_build: list[float] = []
    second_builds: list[float] = []

    def up(*args: str) -> float:
        name = _name()
        argv = ["dind", "up", name, "--image", IMAGE, "--pool-socket", str(sock), "-q", *args]
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "dockmoat", *argv], check=True, capture_output=True, env=env
        )
        elapsed = time.perf_counter() - start
        assert b"DOCKER_HOST=" in done.stdout, done.stdout
        last.append(name)
        return elapsed

    def take_in_process() -> float:
        """The hand-out alone, as `up` does it after its imports: take, mTLS ping, context."""
        name = _name()
        shape = {**DindOptions(image=IMAGE).shape(), "host": "", "cache": key}
        start = time.perf_counter()
        reply = pool_client.take(sock, name, shape)
        assert reply is not None, "the pool had nothing ready for the key"
        info = DindInfo.from_json(reply)
        assert probe.ping(info.host_address, info.port, probe.tls_context(info.cert_path))
        context.write(
            manager.docker_config, info.context, info.host_url, info.instance, info.cert_path
        )
        elapsed = time.perf_counter() - start
        last.append(name)
        return elapsed

    def ready(count: Callable[[], int]) -> None:
        deadline = time.monotonic() + 180
        while count() < 1 and time.monotonic() < deadline:
            time.sleep(0.1)

    last: list[str] = []
    try:
        ready(lambda: service.ready_for(None))
        up()  # untimed: fills the bytecode cache of the warm path
        manager.down(last.pop())
        for round_ in range(runs + 1):
            timed = round_ > 0  # round 0 fills the key's cache (and the cold path's .pyc)
            # The pool full first: no refill competes with the floors and the cold start.
            ready(lambda: service.ready_for(None))
            ready(lambda: service.ready_for(key))
            floor = bench_bare(client, tmp)
            fair_floor = bench_fair(client, server_dir, client_dir)
            cold_time = up("--no-pool")
            manager.down(last.pop())
            ready(lambda: service.ready_for(None))
            warm_time = up()
            manager.down(last.pop())
            ready(lambda: service.ready_for(key))
            cached_time = up("--cache", key)
            info = manager.info(last[-1])
            if round_ == 0:
                manager.preload(info, (BUSYBOX,))
                first_build.append(_build(manager, info))
            else:
                second_builds.append(_build(manager, info))
            manager.down(last.pop())
            ready(lambda: service.ready_for(key))
            api_time = take_in_process()
            manager.down(last.pop())
            if timed:
                cached_api.append(api_time)
                bare.append(floor)
                fair.append(fair_floor)
                cold.append(cold_time)
                warm.append(warm_time)
                cached.append(cached_time)
    finally:
        service.stop()
        thread.join(180)
        for name in last:
            try:
                manager.down(name)
            except Exception as error:
                print(f"bench: cannot remove {name}: {error}", file=sys.stderr)
        try:
            manager.api.remove_volume(f"dockmoat-dind-cache-{key}")
        except docker.errors.APIError as error:
            print(f"bench: cannot remove the cache volume: {error}", file=sys.stderr)
    return [
        *_cold_rows(bare, fair, cold),
        ("warm `dockmoat dind up` (plain pool daemon), whole process", _fmt(warm)),
        (
            "warm+cache `dockmoat dind up --cache KEY` (pool daemon on KEY), whole process",
            _fmt(cached),
        ),
        ("warm+cache hand-out alone, API (take, mTLS ping, context)", _fmt(cached_api)),
        ("first build of the Dockerfile on the key's first warm daemon", _fmt(first_build)),
        ("second build on a later warm+cache daemon (layers reused)", _fmt(second_builds)),
    ]


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="dmbench-") as tmp_name:
        tmp = Path(tmp_name)
        state = tmp / "state"
        state.mkdir(mode=0o700)
        client = docker.from_env(version="auto", timeout=300)
        manager = DindManager(state_dir=state, docker_config=tmp / "docker-config", client=client)
        print(f"dind benchmarks on: {machine()}", file=sys.stderr)
        if argv and argv[0] in ("pool-cache", "cold"):
            try:
                if argv[0] == "cold":
                    rows = bench_cold_cli(client, manager, tmp, RUNS)
                else:
                    rows = bench_pool_cache(client, manager, tmp, RUNS)
            finally:
                client.close()
            _print_rows(rows)
            return 0
        ecdsa, with_ca, rsa = bench_certs()
        server_dir, client_dir = fair_certs(tmp)
        bare, fair, cold = [], [], []
        for _ in range(RUNS):  # interleaved, so drift hits all alike
            bare.append(bench_bare(client, tmp))
            fair.append(bench_fair(client, server_dir, client_dir))
            cold.append(bench_cold(manager))
        bare_tcp = [bench_bare(client, tmp, tcp=True) for _ in range(2)]
        warm_api, warm_cli, warm_source = bench_warm(manager, tmp)
        without, with_cache = bench_builds(manager)
        ratio = statistics.median(cold) / statistics.median(fair)
        rows = [
            (
                "certificates: ECDSA P-256 server + client CA + client (manager CA exists)",
                _fmt(ecdsa),
            ),
            ("certificates: the same plus a new manager CA", _fmt(with_ca)),
            ("certificates: official recipe, RSA-4096 CA + server + client (openssl)", _fmt(rsa)),
            ("bare `docker run --privileged` DinD until /_ping (unix socket, no TLS)", _fmt(bare)),
            ("bare `docker run --privileged` DinD on plain TCP without TLS", _fmt(bare_tcp)),
            (
                "fair floor: `dockerd --tlsverify` on certificates made beforehand, "
                "until /_ping over mTLS",
                _fmt(fair),
            ),
            ("cold `up` in process, API (network, volume, certs, limits)", _fmt(cold)),
            (
                "cold `up` in process / fair floor (p50 ratio; the whole process is below)",
                f"{ratio:.2f}x",
            ),
            ("warm-pool `up`, API (take, mTLS ping, context)", _fmt(warm_api)),
            (
                "warm-pool `up`, whole `dockmoat dind up` process (bytecode cached, as installed; "
                "target < 0.3 s)",
                _fmt(warm_cli),
            ),
            (
                "warm-pool `up`, whole process without .pyc files (PYTHONDONTWRITEBYTECODE=1)",
                _fmt(warm_source),
            ),
            ("second build of a 4-step Dockerfile, no --cache", _fmt([without])),
            ("second build of a 4-step Dockerfile, --cache KEY", _fmt([with_cache])),
        ]
        rows += bench_pool_cache(client, manager, tmp, RUNS)
        _print_rows(rows)
        client.close()
    return 0


def _print_rows(rows: list[tuple[str, str]]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nMachine: {machine()}; load average at the end {load} (shared with other work)\n")
    print("| dind benchmark | p50 |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
