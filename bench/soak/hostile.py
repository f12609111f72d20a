"""Hostile clients, run in a process of their own (`python -m bench.soak.hostile`).

The soak's load generator measures the other jobs' latency in its own event loop; when
the hostile clients (thousands of connects, a 2,000-request pipeline, a 64 MiB body)
ran in that same loop, their cost showed up in the jobs' p99 as if it were the
guard's. Here they run in a child process, so the jobs' p99 under hostile clients
is the guard's (and the machine's) answer, not the generator's own queueing.

The child prints one JSON object on stdout: what it sent and saw (the parent adds the
counts to its audit check), and its own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from bench.soak.client import Broken, Conn, Stats
from bench.soak.harness import BUSYBOX

API = "/v1.47"


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
    try:
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
    except (Broken, KeyError, TypeError, ValueError, OSError) as e:
        return f"export left unread: did not run to the end ({e!r})"
    finally:
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


async def run(args: argparse.Namespace) -> dict[str, object]:
    hostile = Stats()  # requests on the main listener (its own tenant)
    job = Stats()  # requests on the job socket (the never-read export)
    loris = [
        asyncio.create_task(slowloris(args.listener, args.hold, body=i % 2 == 1))
        for i in range(args.slowloris)
    ]
    unread = asyncio.create_task(never_read(args.job_socket, args.hold / 2, job))
    failed = await connect_drop(args.listener, args.connect_drop)
    got = await pipelined(args.listener, args.pipelined, hostile)
    sizes = await enormous(args.listener, hostile)
    await remove_own_containers(args.listener, hostile)  # the 3 MiB string's create succeeds
    unread_note = await unread
    await asyncio.gather(*loris)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "notes": [
            unread_note,
            f"hostile: {args.slowloris} slowloris (heads and bodies) held {args.hold:.0f} s; "
            f"{args.connect_drop} connections opened and dropped ({failed} refused); "
            f"{got}/{args.pipelined} pipelined pings answered; oversized inputs: {sizes}",
        ],
        "hostile_sent": hostile.sent,
        "hostile_broken": hostile.broken,
        "job_sent": job.sent,
        "job_broken": job.broken,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak.hostile", description=__doc__)
    p.add_argument("--listener", required=True, help="the guard's main listener (unix socket)")
    p.add_argument("--job-socket", required=True, help="a job socket for the never-read export")
    p.add_argument("--hold", type=float, required=True, help="seconds the slow clients hold")
    p.add_argument("--slowloris", type=int, default=50)
    p.add_argument("--connect-drop", type=int, default=2000)
    p.add_argument("--pipelined", type=int, default=2000)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
