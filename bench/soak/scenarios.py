"""Faults and hostile clients, each run while the load runs; and the "nothing lost" checks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak.client import Broken, Conn, Stats
from bench.soak.harness import BUSYBOX, Dockerd, Serve, SmallDisk, ping
from bench.soak.load import API


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
    await asyncio.sleep(duration / 3)
    env.audit_disk.fill()
    await asyncio.sleep(duration / 4)
    env.audit_disk.unfill()
    env.notes.append("audit disk full for a quarter of the run, then freed")


# Hostile clients, on the guard's main listener (a tenant of its own), while jobs run.


async def slowloris(sock: str, seconds: float, body: bool) -> None:
    try:
        reader, writer = await asyncio.open_unix_connection(sock)
    except OSError:
        return
    try:
        if body:
            writer.write(
                b"POST /v1.47/containers/create HTTP/1.1\r\nHost: d\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            )
        else:
            writer.write(b"GET /_ping HTTP/1.1\r\nHost: d\r\n")
        end = time.monotonic() + seconds
        while time.monotonic() < end and not reader.at_eof():
            writer.write(b" " if body else b"X")
            await writer.drain()
            await asyncio.sleep(1)
    except OSError:
        pass
    finally:
        writer.close()


async def connect_drop(sock: str, count: int) -> int:
    failed = 0
    for _ in range(count):
        try:
            _, writer = await asyncio.open_unix_connection(sock)
            writer.close()
        except OSError:
            failed += 1
    return failed


async def pipelined(sock: str, count: int, stats: Stats) -> int:
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n" * count)
    stats.sent += count
    got = 0
    try:
        while got < count:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            got += 1
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        pass
    writer.close()
    return got


async def enormous(sock: str, stats: Stats) -> dict[str, str]:
    out: dict[str, str] = {}

    async def raw(name: str, data: bytes, counted: bool) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(data)
            await writer.drain()
            head = await asyncio.wait_for(reader.readline(), 30)
            out[name] = head.decode(errors="replace").split(" ", 2)[1]
            writer.close()
        except (OSError, TimeoutError, IndexError, asyncio.IncompleteReadError) as e:
            out[name] = f"broken ({type(e).__name__})"
        if counted:
            stats.sent += 1

    await raw(
        "1 MiB header", b"GET /_ping HTTP/1.1\r\nHost: d\r\nX: " + b"a" * 2**20 + b"\r\n\r\n", False
    )
    await raw(
        "10,000 headers",
        b"GET /_ping HTTP/1.1\r\nHost: d\r\n" + b"X: y\r\n" * 10000 + b"\r\n",
        False,
    )
    bodies = {
        "JSON nested 100,000 deep": b"[" * 100000 + b"]" * 100000,
        "JSON number of 1M digits": b'{"Image": "x", "StopTimeout": ' + b"9" * 1000000 + b"}",
        "JSON 3 MiB string": json.dumps(
            {"Image": BUSYBOX, "Env": ["A=" + "x" * 3 * 2**20]}
        ).encode(),
        "JSON 64 MiB body": b"{" + b" " * (64 * 2**20) + b"}",
    }
    for name, body in bodies.items():
        head = (
            f"POST /v1.47/containers/create HTTP/1.1\r\nHost: d\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        await raw(name, head + body, True)
    return out


async def never_read(sock: str, seconds: float, stats: Stats) -> str:
    """A job's container holds 256 MiB; its export is asked for and never read."""
    conn = Conn(sock, stats, timeout=120)
    r = await conn.request(
        "POST",
        f"{API}/containers/create?name=big",
        {"Image": BUSYBOX, "Cmd": ["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=256"]},
    )
    cid = str(r.json()["Id"])  # type: ignore[index]
    await conn.request("POST", f"{API}/containers/{cid}/start")
    await conn.request("POST", f"{API}/containers/{cid}/wait")
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(f"GET {API}/containers/{cid}/export HTTP/1.1\r\nHost: d\r\n\r\n".encode())
    await writer.drain()
    stats.sent += 1
    await reader.read(1024)
    await asyncio.sleep(seconds)  # never read again
    writer.close()
    await conn.request("DELETE", f"{API}/containers/{cid}?force=1")
    await conn.close()
    return f"export of a 256 MiB container left unread for {seconds:.0f} s"


async def remove_own_containers(sock: str, stats: Stats) -> None:
    """What the hostile clients' tenant (the main listener) made: not a job's, so no
    `job close` removes it."""
    conn = Conn(sock, stats)
    try:
        listed = (await conn.request("GET", f"{API}/containers/json?all=1")).json()
        for c in listed if isinstance(listed, list) else []:
            await conn.request("DELETE", f"{API}/containers/{c['Id']}?force=1")
    except Broken:
        pass
    finally:
        await conn.close()


async def fault_hostile(env: Env, duration: float) -> None:
    sock = env.serve.sock
    scale = env.scale
    hold = duration * 0.8
    loris = [
        asyncio.create_task(slowloris(sock, hold, body=i % 2 == 1))
        for i in range(scale["slowloris"])
    ]
    unread = asyncio.create_task(
        never_read(env.serve.job_socket(env.jobs[-1]), hold / 2, env.stats(env.jobs[-1]))
    )
    failed = await connect_drop(sock, scale["connect_drop"])
    got = await pipelined(sock, scale["pipelined"], env.hostile)
    sizes = await enormous(sock, env.hostile)
    await remove_own_containers(sock, env.hostile)  # the 3 MiB string's create succeeds
    env.notes.append(await unread)
    await asyncio.gather(*loris)
    env.notes.append(
        f"hostile: {scale['slowloris']} slowloris (heads and bodies) held {hold:.0f} s; "
        f"{scale['connect_drop']} connections opened and dropped ({failed} refused); "
        f"{got}/{scale['pipelined']} pipelined pings answered; oversized inputs: {sizes}"
    )


# "Nothing lost"


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
